//! The egress filter as data (S7.2), and the verdict it gives a destination: the guest turns
//! the rules into nftables, `ccvm --ccvm-doctor DEST` explains a destination with
//! [`FirewallRules::verdict`], so both read the same rules the same way.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The egress filter as data: everything not listed is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRules {
    /// TCP destinations the guest may reach.
    pub allow: Vec<AllowRule>,
    /// The only resolver DNS (UDP/TCP 53) may go to; `None` = no DNS at all.
    #[serde(default)]
    pub dns_server: Option<String>,
}

/// One allowed TCP destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    /// An address or CIDR (`203.0.113.7`, `10.0.0.0/8`, `2001:db8::/32`).
    pub destination: String,
    pub tcp_ports: Vec<u16>,
    /// The name the user wrote, when the address came from resolving it.
    #[serde(default)]
    pub from_name: Option<String>,
}

/// How the filter treats one TCP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The first rule that lets it through.
    Allowed(&'a AllowRule),
    /// A rule covers the address, but not this port: the first such rule, and the ports all
    /// rules covering the address allow.
    PortNotAllowed {
        rule: &'a AllowRule,
        ports: Vec<u16>,
    },
    /// No rule covers the address.
    AddressNotAllowed,
}

impl AllowRule {
    /// Whether this rule's address or CIDR covers `address`.
    pub fn covers(&self, address: IpAddr) -> bool {
        covers(&self.destination, address)
    }
}

impl FirewallRules {
    /// What the filter does with TCP to `address:port`.
    pub fn verdict(&self, address: IpAddr, port: u16) -> Verdict<'_> {
        let covering: Vec<&AllowRule> = self.allow.iter().filter(|r| r.covers(address)).collect();
        if let Some(rule) = covering.iter().find(|r| r.tcp_ports.contains(&port)) {
            return Verdict::Allowed(rule);
        }
        let Some(first) = covering.first() else {
            return Verdict::AddressNotAllowed;
        };
        let mut ports: Vec<u16> = covering
            .iter()
            .flat_map(|r| r.tcp_ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Verdict::PortNotAllowed { rule: first, ports }
    }
}

/// Whether `destination` (an address or CIDR) covers `address`.
pub fn covers(destination: &str, address: IpAddr) -> bool {
    let (network, bits) = match destination.split_once('/') {
        Some((network, bits)) => match (network.parse::<IpAddr>(), bits.parse::<u32>()) {
            (Ok(network), Ok(bits)) => (network, bits),
            _ => return false,
        },
        None => return destination.parse::<IpAddr>() == Ok(address),
    };
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> FirewallRules {
        FirewallRules {
            allow: vec![
                AllowRule {
                    destination: "192.0.2.0/24".to_owned(),
                    tcp_ports: vec![443],
                    from_name: None,
                },
                AllowRule {
                    destination: "192.0.2.7".to_owned(),
                    tcp_ports: vec![8080],
                    from_name: Some("api.example".to_owned()),
                },
            ],
            dns_server: None,
        }
    }

    #[test]
    fn verdict_names_the_rule_or_the_ports_or_nothing() {
        let rules = rules();
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(
            matches!(rules.verdict(ip("192.0.2.9"), 443), Verdict::Allowed(r) if r.destination == "192.0.2.0/24")
        );
        assert!(
            matches!(rules.verdict(ip("192.0.2.7"), 8080), Verdict::Allowed(r) if r.from_name.is_some())
        );
        assert!(matches!(
            rules.verdict(ip("192.0.2.7"), 22),
            Verdict::PortNotAllowed { rule, ports } if rule.destination == "192.0.2.0/24" && ports == [443, 8080]
        ));
        assert_eq!(
            rules.verdict(ip("198.51.100.1"), 443),
            Verdict::AddressNotAllowed
        );
    }

    #[test]
    fn cidrs_cover_their_range_only() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(covers("10.0.0.0/8", ip("10.0.2.2")));
        assert!(!covers("10.0.0.0/8", ip("11.0.0.1")));
        assert!(covers("0.0.0.0/0", ip("1.2.3.4")));
        assert!(covers("2001:db8::/32", ip("2001:db8::1")));
        assert!(!covers("2001:db8::/32", ip("10.0.2.2")));
        assert!(!covers("nonsense/8", ip("10.0.2.2")));
    }
}
