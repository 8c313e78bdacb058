//! The egress filter (S7.2): an nftables ruleset that drops every outgoing packet except
//! loopback, replies on established connections (the ssh session), and TCP to the
//! allowlisted destinations on their ports. DNS passes only to `dns_server` when the rules
//! name one; the egress policy names none (the allowed names are pinned in `/etc/hosts`, and
//! a reachable resolver is a tunnel), and PID 1 then writes a `resolv.conf` without one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ccvm_guest_protocol::FirewallRules;

/// `nft` in the image.
const NFT: &str = "/usr/sbin/nft";

fn family(destination: &str) -> &'static str {
    if destination.contains(':') {
        "ip6"
    } else {
        "ip"
    }
}

/// The ruleset text for `nft -f -`. Destinations were validated by the egress policy (only
/// `[A-Za-z0-9._:/-]`), so they are safe to place in the text.
pub fn ruleset(rules: &FirewallRules) -> String {
    let mut text = String::from(
        "flush ruleset\n\
         table inet ccvm_egress {\n\
         \tchain output {\n\
         \t\ttype filter hook output priority filter; policy drop;\n\
         \t\toif \"lo\" accept\n\
         \t\tct state established,related accept\n",
    );
    if let Some(dns) = &rules.dns_server {
        let f = family(dns);
        let _ = writeln!(text, "\t\t{f} daddr {dns} udp dport 53 accept");
        let _ = writeln!(text, "\t\t{f} daddr {dns} tcp dport 53 accept");
    }
    for rule in &rules.allow {
        if rule.tcp_ports.is_empty() {
            continue;
        }
        let ports: Vec<String> = rule.tcp_ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            text,
            "\t\t{} daddr {} tcp dport {{ {} }} accept",
            family(&rule.destination),
            rule.destination,
            ports.join(", ")
        );
    }
    text.push_str("\t}\n}\n");
    text
}

/// Installs the filter; when that fails, closes egress as far as it can and says how on the
/// console (S7.2: fail closed), keeping loopback and the ssh session alive for `--shell`.
pub fn install_or_close(rules: &FirewallRules, gateway: Option<&str>) {
    let Err(why) = install(rules) else { return };
    eprintln!(
        "ccvm-guest: {}: {why}",
        ccvm_guest_protocol::markers::EGRESS_FILTER_FAILED
    );
    // Everything dropped but loopback and established connections.
    if install(&FirewallRules::default()).is_ok() {
        eprintln!("ccvm-guest: egress is closed completely instead (fail-closed)");
        return;
    }
    // No nftables at all: no routes but the one the ssh session's replies need.
    let _ = Command::new("/usr/sbin/ip")
        .args(["route", "flush", "dev", "eth0"])
        .status();
    if let Some(gateway) = gateway {
        let _ = Command::new("/usr/sbin/ip")
            .args(["route", "add", &format!("{gateway}/32"), "dev", "eth0"])
            .status();
    }
    eprintln!(
        "ccvm-guest: nftables is unusable; all routes removed (fail-closed); only the host gateway \
         stays reachable for the ssh session"
    );
}

/// Loads the ruleset with `nft`.
pub fn install(rules: &FirewallRules) -> Result<(), String> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {NFT}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(ruleset(rules).as_bytes())
        .map_err(|e| format!("cannot write the ruleset to nft: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft rejected the ruleset ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use ccvm_guest_protocol::AllowRule;

    use super::*;

    #[test]
    fn default_drop_with_loopback_established_dns_and_the_allowlist() {
        let rules = FirewallRules {
            allow: vec![
                AllowRule {
                    destination: "203.0.113.7".into(),
                    tcp_ports: vec![443, 8443],
                    from_name: Some("api.example".into()),
                },
                AllowRule {
                    destination: "2001:db8::/32".into(),
                    tcp_ports: vec![443],
                    from_name: None,
                },
            ],
            dns_server: Some("10.0.2.3".into()),
        };
        let text = ruleset(&rules);
        assert!(text.starts_with("flush ruleset\n"));
        assert!(text.contains("policy drop;"));
        assert!(text.contains("oif \"lo\" accept"));
        assert!(text.contains("ct state established,related accept"));
        assert!(text.contains("ip daddr 10.0.2.3 udp dport 53 accept"));
        assert!(text.contains("ip daddr 203.0.113.7 tcp dport { 443, 8443 } accept"));
        assert!(text.contains("ip6 daddr 2001:db8::/32 tcp dport { 443 } accept"));
        // Nothing else is let out: no other UDP, no 10.0.2.2 unless listed.
        assert_eq!(text.matches("accept").count(), 6);
        assert!(!text.contains("10.0.2.2"));
    }

    #[test]
    fn without_a_resolver_no_dns_leaves() {
        let text = ruleset(&FirewallRules::default());
        assert!(!text.contains("dport 53"));
    }
}
