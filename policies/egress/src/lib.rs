//! The `egress` policy: an allowlist that turns the guest's network default-deny (S7).
//!
//! Pure: it validates entries (S7.4), asks the host to resolve the names (plus
//! `api.anthropic.com`, always allowed on 443), and produces the filter as data, the
//! resolver pins, the sudo decision (S7.3) and the session-header text (S5.6). It never
//! resolves anything itself; the guest agent installs the filter.
//!
//! Under an allowlist the guest gets no DNS at all (S7.2): every allowed name is pinned in
//! `/etc/hosts`, so a resolver would only serve as a tunnel (queries carry data out). An entry
//! whose range covers the guest's gateway is warned about: on QEMU user networking that
//! address is the host's own loopback, so the entry opens every local service of the host.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use ccvm_plugin_api::{
    AllowRule, Diagnostic, FirewallRules, HostFacts, PluginError, Policy, PolicyInput, PolicyPlan,
    Requirements, SetupStep,
};
use serde::{Deserialize, Serialize};

/// Always reachable when an allowlist is set, on port 443.
pub const ALWAYS_ALLOWED: &str = "api.anthropic.com";

/// Default `egress.ports`.
pub const DEFAULT_PORTS: [u16; 1] = [443];

/// Whether the agent gets passwordless root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentSudo {
    /// Root unless an allowlist is set.
    #[default]
    Auto,
    On,
    Off,
}

/// The `[egress]` section plus `agent_sudo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressSettings {
    #[serde(default)]
    pub allowlist: Vec<String>,
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub agent_sudo: AgentSudo,
}

fn default_ports() -> Vec<u16> {
    DEFAULT_PORTS.to_vec()
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            allowlist: Vec::new(),
            ports: default_ports(),
            agent_sudo: AgentSudo::Auto,
        }
    }
}

/// One validated allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Address(IpAddr),
    /// `address/prefix`, kept as written after validation.
    Network(String),
    /// A host name, resolved on the host at launch.
    Name(String),
}

/// Validates one allowlist entry: only `[A-Za-z0-9._:/-]` (S7.4), then an address, a CIDR
/// or a host name. The error says what is wrong, for the config error message.
pub fn parse_entry(entry: &str) -> Result<Entry, String> {
    if entry.is_empty() {
        return Err("an entry is empty".to_owned());
    }
    if let Some(bad) = entry
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return Err(format!(
            "`{entry}` contains {bad:?}; entries may only use letters, digits and . _ : / -"
        ));
    }
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(Entry::Address(address));
    }
    if let Some((address, prefix)) = entry.split_once('/') {
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("`{entry}` is not a CIDR: `{address}` is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(bits) if bits <= max => return Ok(Entry::Network(entry.to_owned())),
            _ => return Err(format!("`{entry}` is not a CIDR: prefix must be 0..={max}")),
        }
    }
    if entry.contains(':') {
        return Err(format!(
            "`{entry}` is neither an IP address nor a host name (ports go in egress.ports)"
        ));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = entry.strip_suffix('.').unwrap_or(entry);
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!("`{entry}` is not a valid host name"));
    }
    Ok(Entry::Name(name.to_ascii_lowercase()))
}

/// Validates every entry, naming the first bad one.
pub fn parse_allowlist(entries: &[String]) -> Result<Vec<Entry>, String> {
    entries.iter().map(|e| parse_entry(e)).collect()
}

/// The policy.
#[derive(Debug, Default)]
pub struct Egress;

fn settings(input: &PolicyInput) -> Result<(EgressSettings, Vec<Entry>), PluginError> {
    let settings: EgressSettings = serde_json::from_value(input.settings.clone())
        .map_err(|e| PluginError::invalid(format!("egress settings: {e}")))?;
    let entries = parse_allowlist(&settings.allowlist)
        .map_err(|e| PluginError::invalid(format!("egress.allowlist: {e}")))?;
    if !entries.is_empty() && settings.ports.is_empty() {
        return Err(PluginError::invalid(
            "egress.ports is empty, so nothing on the allowlist would be reachable; list at \
             least one port",
        ));
    }
    Ok((settings, entries))
}

fn names(entries: &[Entry]) -> Vec<String> {
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Name(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    if !names.iter().any(|n| n == ALWAYS_ALLOWED) {
        names.push(ALWAYS_ALLOWED.to_owned());
    }
    names
}

/// Whether `destination` (an address or CIDR) covers `address` (the guest contract's rule).
pub use ccvm_plugin_api::guest::firewall::covers;

/// The warning for allowlist rules that reach the guest's gateway (the host's loopback on
/// QEMU user networking), or `None` when no rule covers it.
pub fn gateway_warning(rules: &[AllowRule], gateway: &str) -> Option<String> {
    let address: IpAddr = gateway.parse().ok()?;
    let entries: Vec<String> = rules
        .iter()
        .filter(|rule| covers(&rule.destination, address))
        .map(|rule| match &rule.from_name {
            Some(name) => format!("`{name}` ({})", rule.destination),
            None => format!("`{}`", rule.destination),
        })
        .collect();
    let ports: BTreeSet<u16> = rules
        .iter()
        .filter(|rule| covers(&rule.destination, address))
        .flat_map(|rule| rule.tcp_ports.iter().copied())
        .collect();
    (!entries.is_empty()).then(|| {
        format!(
            "egress allowlist entry {} covers {gateway}, the host's own loopback as the guest \
             sees it: the agent can reach every service listening on the host's 127.0.0.1 on \
             TCP ports {}; list narrower ranges if that is not intended",
            entries.join(", "),
            ports_text(&ports.into_iter().collect::<Vec<_>>())
        )
    })
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Policy for Egress {
    const NAME: &'static str = "egress";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "default-deny egress allowlist enforced in the guest";

    fn requirements(&self, input: &PolicyInput) -> Result<Requirements, PluginError> {
        let (_, entries) = settings(input)?;
        Ok(Requirements {
            resolve: if entries.is_empty() {
                Vec::new()
            } else {
                names(&entries)
            },
            ..Requirements::default()
        })
    }

    fn plan(&self, input: &PolicyInput, facts: &HostFacts) -> Result<PolicyPlan, PluginError> {
        let (settings, entries) = settings(input)?;
        let mut plan = PolicyPlan::default();
        let locked = !entries.is_empty();
        let sudo = match settings.agent_sudo {
            AgentSudo::Auto => !locked,
            AgentSudo::On => {
                if locked {
                    plan.diagnostics.push(Diagnostic::warning(
                        "agent_sudo = true with an egress allowlist: the agent has root and \
                         can lift the filter, so the allowlist is advisory only",
                    ));
                }
                true
            }
            AgentSudo::Off => false,
        };
        plan.setup_steps
            .push(SetupStep::AgentSudo { allowed: sudo });

        if !locked {
            plan.context.push(
                "Network egress is open: the VM reaches the internet like the host does."
                    .to_owned(),
            );
            return Ok(plan);
        }
        if !input.session.guest_network {
            plan.diagnostics.push(Diagnostic::warning(format!(
                "backend `{}` gives the guest no network, so the egress allowlist has no effect",
                input.session.backend
            )));
        }

        let mut rules = Vec::new();
        let mut pins = Vec::new();
        let mut reachable = Vec::new();
        let mut unresolved = Vec::new();
        for entry in &entries {
            let destination = match entry {
                Entry::Address(address) => address.to_string(),
                Entry::Network(cidr) => cidr.clone(),
                Entry::Name(_) => continue,
            };
            reachable.push(format!(
                "{destination} (ports {})",
                ports_text(&settings.ports)
            ));
            rules.push(AllowRule {
                destination,
                tcp_ports: settings.ports.clone(),
                from_name: None,
            });
        }
        for name in names(&entries) {
            let ports: Vec<u16> = if name == ALWAYS_ALLOWED {
                settings
                    .ports
                    .iter()
                    .copied()
                    .chain([443])
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            } else {
                settings.ports.clone()
            };
            let addresses = facts.resolved.get(&name).cloned().unwrap_or_default();
            if addresses.is_empty() {
                unresolved.push(name);
                continue;
            }
            for address in &addresses {
                rules.push(AllowRule {
                    destination: address.to_string(),
                    tcp_ports: ports.clone(),
                    from_name: Some(name.clone()),
                });
                pins.push((name.clone(), *address));
            }
            reachable.push(format!("{name} (ports {})", ports_text(&ports)));
        }
        let user_names: Vec<&String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Name(name) => Some(name),
                _ => None,
            })
            .collect();
        // Names the user listed, none of which resolves, mean the host's DNS is broken, not
        // that the user wants an unreachable allowlist. Addresses alone need no DNS (S7.2).
        if pins.is_empty() && !user_names.is_empty() {
            return Err(PluginError::failed(format!(
                "none of the egress allowlist's names resolved on this host ({}); check the \
                 host's DNS and network, or list IP addresses",
                unresolved.join(", ")
            )));
        }
        for name in &unresolved {
            plan.diagnostics.push(Diagnostic::warning(if name == ALWAYS_ALLOWED {
                format!(
                    "egress allowlist: `{ALWAYS_ALLOWED}` did not resolve on the host, so claude \
                     cannot reach the Anthropic API in this session (the rest of the allowlist \
                     is unaffected)"
                )
            } else {
                format!(
                    "egress allowlist: `{name}` did not resolve on the host and will be unreachable"
                )
            }));
        }
        if let Some(warning) = input
            .session
            .guest_gateway
            .as_deref()
            .and_then(|gateway| gateway_warning(&rules, gateway))
        {
            plan.diagnostics.push(Diagnostic::warning(warning));
        }
        let pinned: BTreeSet<&str> = pins.iter().map(|(name, _)| name.as_str()).collect();
        let pinned: Vec<&str> = pinned.into_iter().collect();
        let resolving = match pinned.as_slice() {
            [] => "No name resolves in this VM: there is no DNS, so use the addresses above."
                .to_owned(),
            [one] => format!(
                "There is no DNS in this VM: only {one} resolves (pinned in /etc/hosts); every \
                 other name fails to resolve."
            ),
            many => format!(
                "There is no DNS in this VM: only {} resolve (pinned in /etc/hosts); every \
                 other name fails to resolve.",
                many.join(", ")
            ),
        };

        plan.setup_steps.push(SetupStep::Firewall(FirewallRules {
            allow: rules,
            // No resolver at all: the names are pinned, and a resolver is a tunnel (S7.2).
            dns_server: None,
        }));
        plan.setup_steps.push(SetupStep::HostsPins { pins });
        plan.context.push(format!(
            "Network egress is locked to an allowlist. Reachable over TCP: {}. {resolving} \
             Every other connection will hang or fail, including package installs and \
             downloads from other hosts: do not retry or work around it. Hand such work back \
             to the user as copy-pasteable commands they can run on the host.",
            reachable.join("; ")
        ));
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use ccvm_plugin_api::DiagnosticLevel;
    use ccvm_plugin_api::testing::{example_facts, example_policy_input};

    use super::*;

    fn input(allowlist: &[&str], sudo: AgentSudo) -> PolicyInput {
        example_policy_input(
            serde_json::to_value(EgressSettings {
                allowlist: allowlist.iter().map(|s| (*s).to_owned()).collect(),
                ports: vec![443],
                agent_sudo: sudo,
            })
            .expect("encode"),
        )
    }

    fn resolved(names: &[(&str, &str)]) -> HostFacts {
        let mut facts = example_facts(&[]);
        for (name, address) in names {
            facts.resolved.insert(
                (*name).to_owned(),
                vec![address.parse().expect("test address")],
            );
        }
        facts
    }

    #[test]
    fn entries_with_forbidden_characters_are_rejected() {
        for bad in ["exa mple.org", "a;b", "*.example.org", "host$", ""] {
            assert!(parse_entry(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_are_classified() {
        assert_eq!(
            parse_entry("10.0.0.1"),
            Ok(Entry::Address("10.0.0.1".parse().expect("ip")))
        );
        assert_eq!(
            parse_entry("10.0.0.0/8"),
            Ok(Entry::Network("10.0.0.0/8".to_owned()))
        );
        assert_eq!(
            parse_entry("GitHub.com"),
            Ok(Entry::Name("github.com".to_owned()))
        );
        assert!(parse_entry("10.0.0.0/33").is_err());
        assert!(parse_entry("example.org:8080").is_err());
        assert!(parse_entry("-bad.example").is_err());
    }

    #[test]
    fn open_egress_gives_sudo_and_says_open() {
        let plan = Egress
            .plan(&input(&[], AgentSudo::Auto), &example_facts(&[]))
            .expect("plan");
        assert_eq!(plan.setup_steps, [SetupStep::AgentSudo { allowed: true }]);
        assert!(plan.context[0].contains("open"));
        let requirements = Egress
            .requirements(&input(&[], AgentSudo::Auto))
            .expect("req");
        assert!(requirements.resolve.is_empty());
    }

    #[test]
    fn allowlist_resolves_names_plus_api_and_drops_sudo() {
        let input = input(&["example.org", "192.0.2.9"], AgentSudo::Auto);
        let requirements = Egress.requirements(&input).expect("req");
        assert_eq!(requirements.resolve, ["example.org", ALWAYS_ALLOWED]);
        let facts = resolved(&[
            ("example.org", "203.0.113.5"),
            (ALWAYS_ALLOWED, "198.51.100.1"),
        ]);
        let plan = Egress.plan(&input, &facts).expect("plan");
        assert!(
            plan.setup_steps
                .contains(&SetupStep::AgentSudo { allowed: false })
        );
        let Some(SetupStep::Firewall(rules)) = plan
            .setup_steps
            .iter()
            .find(|s| matches!(s, SetupStep::Firewall(_)))
        else {
            panic!("no firewall step: {:?}", plan.setup_steps);
        };
        let destinations: Vec<&str> = rules.allow.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(destinations, ["192.0.2.9", "203.0.113.5", "198.51.100.1"]);
        // S7.2: no resolver at all under an allowlist; the names are pinned instead.
        assert_eq!(rules.dns_server, None);
        assert!(
            plan.setup_steps.contains(&SetupStep::HostsPins {
                pins: vec![
                    ("example.org".to_owned(), "203.0.113.5".parse().expect("ip")),
                    (
                        ALWAYS_ALLOWED.to_owned(),
                        "198.51.100.1".parse().expect("ip")
                    ),
                ]
            }),
            "{:?}",
            plan.setup_steps
        );
        assert!(
            plan.context[0].contains(&format!(
                "There is no DNS in this VM: only {ALWAYS_ALLOWED}, example.org resolve"
            )),
            "{}",
            plan.context[0]
        );
        assert!(
            plan.context[0].contains("example.org"),
            "{}",
            plan.context[0]
        );
        assert!(
            plan.context[0].contains("copy-pasteable"),
            "{}",
            plan.context[0]
        );
    }

    #[test]
    fn nothing_resolving_refuses_the_launch() {
        let error = Egress
            .plan(
                &input(&["example.org"], AgentSudo::Auto),
                &example_facts(&[]),
            )
            .expect_err("refused");
        assert!(error.message.contains("example.org"), "{}", error.message);
    }

    /// S7.2: an allowlist of addresses needs no DNS: it boots although no name resolves, and
    /// says that the API is then out of reach.
    #[test]
    fn an_address_only_allowlist_boots_without_any_name_resolving() {
        let plan = Egress
            .plan(
                &input(&["192.0.2.9", "198.51.100.0/24"], AgentSudo::Auto),
                &example_facts(&[]),
            )
            .expect("an address-only allowlist needs no name");
        let Some(SetupStep::Firewall(rules)) = plan
            .setup_steps
            .iter()
            .find(|s| matches!(s, SetupStep::Firewall(_)))
        else {
            panic!("no firewall step: {:?}", plan.setup_steps);
        };
        let destinations: Vec<&str> = rules.allow.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(destinations, ["192.0.2.9", "198.51.100.0/24"]);
        assert!(
            plan.setup_steps
                .contains(&SetupStep::HostsPins { pins: Vec::new() })
        );
        assert!(
            plan.diagnostics
                .iter()
                .any(|d| d.level == DiagnosticLevel::Warning
                    && d.message.contains("`api.anthropic.com` did not resolve")
                    && d.message.contains("cannot reach the Anthropic API")),
            "{:?}",
            plan.diagnostics
        );
        assert!(
            plan.context[0].contains("No name resolves"),
            "{}",
            plan.context[0]
        );
    }

    /// S7.2: an entry whose range covers the host gateway (the host's loopback on QEMU user
    /// networking) is warned about, naming the entry; a range beside it is not.
    #[test]
    fn an_entry_covering_the_host_gateway_warns() {
        let facts = resolved(&[(ALWAYS_ALLOWED, "198.51.100.1")]);
        let plan = Egress
            .plan(&input(&["10.0.0.0/8"], AgentSudo::Auto), &facts)
            .expect("plan");
        let warning = plan
            .diagnostics
            .iter()
            .find(|d| d.message.contains("host's own loopback"))
            .unwrap_or_else(|| panic!("no gateway warning: {:?}", plan.diagnostics));
        assert_eq!(warning.level, DiagnosticLevel::Warning);
        assert!(
            warning.message.contains("`10.0.0.0/8` covers 10.0.2.2")
                && warning.message.contains("TCP ports 443"),
            "{}",
            warning.message
        );
        let narrow = Egress
            .plan(&input(&["10.1.0.0/16"], AgentSudo::Auto), &facts)
            .expect("plan");
        assert!(
            !narrow
                .diagnostics
                .iter()
                .any(|d| d.message.contains("loopback")),
            "{:?}",
            narrow.diagnostics
        );
    }

    #[test]
    fn cidr_cover_handles_both_families_and_edges() {
        let ip = |t: &str| -> IpAddr { t.parse().expect("test address") };
        assert!(covers("0.0.0.0/0", ip("8.8.8.8")));
        assert!(covers("2001:db8::/32", ip("2001:db8:1::5")));
        assert!(!covers("2001:db8::/32", ip("2001:db9::5")));
        assert!(!covers("10.0.0.0/8", ip("2001:db8::1")));
        assert!(covers("10.1.2.3/32", ip("10.1.2.3")));
        assert!(!covers("10.1.2.3/32", ip("10.1.2.4")));
        assert!(covers("10.0.2.2", ip("10.0.2.2")));
    }

    #[test]
    fn forced_sudo_with_allowlist_warns() {
        let facts = resolved(&[(ALWAYS_ALLOWED, "198.51.100.1")]);
        let plan = Egress
            .plan(&input(&["192.0.2.9"], AgentSudo::On), &facts)
            .expect("plan");
        assert!(
            plan.setup_steps
                .contains(&SetupStep::AgentSudo { allowed: true })
        );
        assert!(plan.diagnostics[0].message.contains("advisory"));
    }
}
