//! `ccvm --ccvm-doctor DESTINATION…`: whether a session planned now could reach a destination
//! through the egress filter, and if not, why and what to change (S7). Works from the filter
//! rules the egress policy planned (data, whichever plugin produced them), so it explains what
//! the guest will enforce, not what the configuration was meant to say.

use std::net::IpAddr;

use ccvm_plugin_api::guest::firewall::Verdict as FilterVerdict;
use ccvm_plugin_api::{AllowRule, FirewallRules};

/// slirp's gateway: the host's loopback as the guest sees it.
const HOST_GATEWAY: &str = "10.0.2.2";

/// A destination as the user wrote it: `host`, `host:port`, `[v6]:port`, a bare IPv6 address,
/// or a URL (`https://github.com/org/repo`, whose scheme gives the default port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub text: String,
    pub host: String,
    pub port: u16,
}

/// Parses one destination; the error names it and says what is accepted.
pub fn parse(text: &str) -> Result<Destination, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` {why}; give a host name or IP address, optionally with `:PORT`, or a URL \
             such as https://github.com"
        )
    };
    let (default_port, rest) = match text.split_once("://") {
        Some((scheme, rest)) => {
            let port = match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => 80,
                "https" | "wss" => 443,
                "ssh" | "git+ssh" => 22,
                "git" => 9418,
                _ => return Err(bad(&format!("has the unknown scheme `{scheme}`"))),
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
            (port, authority)
        }
        None => (443, text),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed `[`"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("has text after `]` that is not `:PORT`")),
        }
    } else if rest.matches(':').count() > 1 {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("has the port `{port}`, not 1-65535")))?,
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.contains(':') && host.parse::<IpAddr>().is_err() {
        return Err(bad(
            "is not a valid IPv6 address (write `[ADDRESS]:PORT` for a port)",
        ));
    }
    Ok(Destination {
        text: text.to_owned(),
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
    })
}

fn entry_name(rule: &AllowRule) -> &str {
    rule.from_name.as_deref().unwrap_or(&rule.destination)
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a session planned now would do with a connection to `destination`, whose host
/// resolved (on the host, as the launch would) to `addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub reachable: bool,
    pub explanation: String,
}

/// Explains one destination. `rules` is the planned filter (`None`: egress is open);
/// `guest_network` whether the backend gives the guest a network at all; `config_file` is
/// named in fixes.
pub fn explain(
    destination: &Destination,
    addresses: &[IpAddr],
    rules: Option<&FirewallRules>,
    guest_network: bool,
    config_file: &str,
) -> Verdict {
    let blocked = |explanation: String| Verdict {
        reachable: false,
        explanation,
    };
    let host = &destination.host;
    let port = destination.port;
    if !guest_network {
        return blocked(
            "the backend gives the guest no network device; fix: use a backend with user-mode \
             networking (microvm, q35, virt)"
                .to_owned(),
        );
    }
    if addresses.is_empty() {
        return blocked(format!(
            "`{host}` does not resolve on this host, and the guest resolves names through the \
             host; fix: check the name, or use its IP address"
        ));
    }
    let Some(rules) = rules else {
        return Verdict {
            reachable: true,
            explanation: format!(
                "egress is open (egress.allowlist is empty): the guest reaches `{host}` like the \
                 host does, through QEMU's user-mode NAT"
            ),
        };
    };
    let is_name = host.parse::<IpAddr>().is_err();
    let pinned = rules
        .allow
        .iter()
        .any(|rule| rule.from_name.as_deref() == Some(host.as_str()));
    if is_name && !pinned {
        let by_address = addresses
            .iter()
            .find(|a| matches!(rules.verdict(**a, port), FilterVerdict::Allowed(_)));
        let address_note = match by_address {
            Some(address) => format!(
                " (its address {address} is allowed on port {port}, so connecting by address \
                 works)"
            ),
            None => String::new(),
        };
        return blocked(format!(
            "`{host}` is not on the egress allowlist, so it does not resolve in the guest (under \
             an allowlist there is no DNS; only the listed names are pinned in /etc/hosts)\
             {address_note}; fix: add \"{host}\" to `allowlist` under [egress] in {config_file} \
             (and {port} to `ports` if it is not there)"
        ));
    }
    let gateway_note = if addresses.iter().any(|a| a.to_string() == HOST_GATEWAY) {
        " (10.0.2.2 is the host's own loopback as the guest sees it)"
    } else {
        ""
    };
    // The filter's own verdict for each address the name has (FirewallRules::verdict is what
    // the guest's nftables rules implement).
    let verdicts: Vec<FilterVerdict<'_>> =
        addresses.iter().map(|a| rules.verdict(*a, port)).collect();
    let allowed = verdicts.iter().find_map(|v| match v {
        FilterVerdict::Allowed(rule) => Some(*rule),
        _ => None,
    });
    if let Some(rule) = allowed {
        let pinned = match &rule.from_name {
            Some(name) => format!(
                "; `{name}` is pinned to {} in the guest's /etc/hosts at launch, so a session \
                 started before the name moved keeps the old address until it is restarted",
                rule.destination
            ),
            None => String::new(),
        };
        let loopback = if gateway_note.is_empty() {
            ""
        } else {
            "; note that this is the host's own loopback: the entry opens the host's local \
             services to the agent"
        };
        return Verdict {
            reachable: true,
            explanation: format!(
                "TCP port {port} to {} is allowed by the allowlist entry `{}`{pinned}; only TCP \
                 passes (no UDP, so no QUIC/HTTP3){loopback}",
                rule.destination,
                entry_name(rule)
            ),
        };
    }
    if let Some((rule, ports)) = verdicts.iter().find_map(|v| match v {
        FilterVerdict::PortNotAllowed { rule, ports } => Some((*rule, ports)),
        _ => None,
    }) {
        return blocked(format!(
            "`{}` is on the allowlist, but only for TCP ports {}; fix: add {port} to \
             `ports` under [egress] in {config_file}",
            entry_name(rule),
            ports_text(ports)
        ));
    }
    let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    let resolved = if shown == [host.as_str()] {
        String::new()
    } else {
        format!(" ({})", shown.join(", "))
    };
    blocked(format!(
        "`{host}`{resolved}{gateway_note} is not on the egress allowlist; fix: add \"{host}\" \
         to `allowlist` under [egress] in {config_file} (and {port} to `ports` if it is not \
         there)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> FirewallRules {
        FirewallRules {
            allow: vec![
                AllowRule {
                    destination: "10.0.2.2".into(),
                    tcp_ports: vec![8080],
                    from_name: None,
                },
                AllowRule {
                    destination: "198.51.100.0/24".into(),
                    tcp_ports: vec![443],
                    from_name: None,
                },
                AllowRule {
                    destination: "203.0.113.9".into(),
                    tcp_ports: vec![443],
                    from_name: Some("api.example".into()),
                },
            ],
            dns_server: Some("10.0.2.3".into()),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn verdict(text: &str, addresses: &[&str]) -> Verdict {
        let addresses: Vec<IpAddr> = addresses.iter().map(|a| ip(a)).collect();
        explain(
            &parse(text).expect("parses"),
            &addresses,
            Some(&rules()),
            true,
            "CONFIG",
        )
    }

    #[test]
    fn destinations_parse_with_default_ports() {
        let cases = [
            ("github.com", "github.com", 443),
            ("GitHub.com.:22", "github.com", 22),
            ("10.0.2.2:8080", "10.0.2.2", 8080),
            ("[2001:db8::1]:8443", "2001:db8::1", 8443),
            ("2001:db8::1", "2001:db8::1", 443),
            ("http://example.org/path?q=1", "example.org", 80),
            ("https://user@example.org:8443/x", "example.org", 8443),
            ("ssh://git@github.com/org/repo", "github.com", 22),
        ];
        for (text, host, port) in cases {
            let d = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((d.host.as_str(), d.port), (host, port), "{text}");
        }
        for bad in [
            "",
            "host:0",
            "host:http",
            "ftp://x",
            "[::1",
            "[::1]x",
            "g::z",
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
    }

    #[test]
    fn an_allowed_address_and_port_is_reachable_and_names_its_entry() {
        let v = verdict("10.0.2.2:8080", &["10.0.2.2"]);
        assert!(v.reachable, "{v:?}");
        assert!(v.explanation.contains("`10.0.2.2`"), "{v:?}");
        let v = verdict("api.example", &["203.0.113.9"]);
        assert!(v.reachable && v.explanation.contains("pinned"), "{v:?}");
        let v = verdict("https://198.51.100.77", &["198.51.100.77"]);
        assert!(
            v.reachable && v.explanation.contains("198.51.100.0/24"),
            "{v:?}"
        );
    }

    #[test]
    fn a_listed_address_on_another_port_says_which_ports_are_allowed() {
        let v = verdict("10.0.2.2:22", &["10.0.2.2"]);
        assert!(!v.reachable);
        assert!(
            v.explanation.contains("only for TCP ports 8080")
                && v.explanation.contains("add 22 to `ports`")
                && v.explanation.contains("CONFIG"),
            "{v:?}"
        );
    }

    #[test]
    fn an_unlisted_host_says_how_to_list_it() {
        let v = verdict("example.org", &["192.0.2.1"]);
        assert!(!v.reachable);
        assert!(
            v.explanation.contains("not on the egress allowlist")
                && v.explanation.contains("add \"example.org\""),
            "{v:?}"
        );
        // Just outside the /24.
        assert!(!verdict("198.51.101.1", &["198.51.101.1"]).reachable);
    }

    /// S7.2: with an allowlist the guest has no DNS, so a name that is not listed does not
    /// resolve there even when a range allows its address.
    #[test]
    fn an_unlisted_name_whose_address_a_range_allows_still_does_not_resolve() {
        let v = verdict("internal.example:443", &["198.51.100.77"]);
        assert!(!v.reachable, "{v:?}");
        assert!(
            v.explanation.contains("does not resolve in the guest")
                && v.explanation
                    .contains("198.51.100.77 is allowed on port 443")
                && v.explanation.contains("add \"internal.example\""),
            "{v:?}"
        );
    }

    #[test]
    fn a_listed_host_gateway_says_it_is_the_host_loopback() {
        let v = verdict("10.0.2.2:8080", &["10.0.2.2"]);
        assert!(v.reachable, "{v:?}");
        assert!(v.explanation.contains("host's local services"), "{v:?}");
    }

    #[test]
    fn the_host_gateway_is_explained_when_unlisted() {
        let mut rules = rules();
        rules.allow.remove(0);
        let v = explain(
            &parse("10.0.2.2:8080").expect("parses"),
            &[ip("10.0.2.2")],
            Some(&rules),
            true,
            "CONFIG",
        );
        assert!(
            !v.reachable && v.explanation.contains("host's own loopback"),
            "{v:?}"
        );
    }

    #[test]
    fn open_egress_unresolvable_names_and_no_network() {
        let d = parse("example.org").expect("parses");
        let open = explain(&d, &[ip("192.0.2.1")], None, true, "CONFIG");
        assert!(
            open.reachable && open.explanation.contains("open"),
            "{open:?}"
        );
        let unresolved = explain(&d, &[], None, true, "CONFIG");
        assert!(!unresolved.reachable && unresolved.explanation.contains("does not resolve"));
        let offline = explain(&d, &[ip("192.0.2.1")], None, false, "CONFIG");
        assert!(!offline.reachable && offline.explanation.contains("no network"));
    }
}
