//! IP allow and deny lists. Networks become sorted, merged ranges in one 128-bit space (IPv4 as
//! IPv4-mapped IPv6), so a lookup is one binary search whether a list has ten entries or a million,
//! and `::ffff:192.0.2.1` is the same client as `192.0.2.1`.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use palisade_core::config::IpRulesConfig;
use palisade_core::{parse_cidr, ConfigErrors, Diagnostic};

/// A set of networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// Disjoint, sorted, non-adjacent inclusive ranges.
    ranges: Vec<(u128, u128)>,
}

impl IpSet {
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        let mut ranges: Vec<(u128, u128)> = networks.into_iter().map(range).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Self { ranges: merged }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = to_u128(ip);
        let after = self.ranges.partition_point(|(start, _)| *start <= ip);
        after > 0 && self.ranges[after - 1].1 >= ip
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of merged ranges (for logs).
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn range(network: IpNet) -> (u128, u128) {
    match network {
        IpNet::V4(v4) => (to_u128(v4.network().into()), to_u128(v4.broadcast().into())),
        IpNet::V6(v6) => {
            // `::ffff:10.0.0.0/104` and `10.0.0.0/8` are the same clients.
            let start: Ipv6Addr = v6.network();
            (u128::from(start), u128::from(v6.broadcast()))
        }
    }
}

/// Allow and deny lists together. Deny wins; a non-empty allow list admits only its members.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Option<IpSet>,
    deny: IpSet,
}

impl IpRules {
    /// Compiles the rules with their list files. Every unreadable file and every bad line is an
    /// error at `file:line:column`; nothing is half-applied.
    pub fn load(config: &IpRulesConfig) -> Result<IpRules, ConfigErrors> {
        let mut errors = Vec::new();
        let mut allow: Vec<IpNet> = config.allow.iter().filter_map(|n| parse_cidr(&n.value)).collect();
        let mut deny: Vec<IpNet> = config.deny.iter().filter_map(|n| parse_cidr(&n.value)).collect();
        for file in &config.allow_files {
            allow.extend(read_list(&file.value, &mut errors));
        }
        for file in &config.deny_files {
            deny.extend(read_list(&file.value, &mut errors));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let has_allow_list = !config.allow.is_empty() || !config.allow_files.is_empty();
        Ok(IpRules {
            allow: has_allow_list.then(|| IpSet::new(allow)),
            deny: IpSet::new(deny),
        })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && self.allow.as_ref().is_none_or(|allow| allow.contains(ip))
    }
}

/// One network per line; blank lines and `#` comments are ignored.
fn read_list(path: &Path, errors: &mut Vec<Diagnostic>) -> Vec<IpNet> {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            errors.push(Diagnostic {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read the IP list: {}", error.kind()),
            });
            return Vec::new();
        }
    };
    let mut networks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_cidr(content) {
            Some(network) => networks.push(network),
            None => errors.push(Diagnostic {
                file: file.clone(),
                line: index as u64 + 1,
                column: (line.len() - line.trim_start().len()) as u64 + 1,
                message: format!("{content:?} is not an IP address or CIDR"),
            }),
        }
    }
    networks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(networks: &[&str]) -> IpSet {
        IpSet::new(networks.iter().map(|n| parse_cidr(n).expect("valid network")))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn membership_covers_v4_v6_and_mapped_addresses() {
        let networks = set(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(networks.contains(ip("10.1.2.3")));
        assert!(networks.contains(ip("::ffff:10.1.2.3")));
        assert!(networks.contains(ip("192.0.2.7")));
        assert!(!networks.contains(ip("192.0.2.8")));
        assert!(networks.contains(ip("2001:db8:1::1")));
        assert!(!networks.contains(ip("2001:db9::1")));
        assert!(!networks.contains(ip("11.0.0.0")));
        assert!(!networks.contains(ip("9.255.255.255")));
    }

    #[test]
    fn mapped_networks_match_plain_v4_clients() {
        let networks = set(&["::ffff:10.0.0.0/104"]);
        assert!(networks.contains(ip("10.200.0.1")));
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let networks = set(&["10.0.0.0/9", "10.128.0.0/9", "10.5.0.0/16", "0.0.0.0/0"]);
        assert_eq!(networks.len(), 1);
        assert!(networks.contains(ip("8.8.8.8")));
        assert!(!networks.contains(ip("2001:db8::1")));
    }

    #[test]
    fn deny_wins_and_allow_lists_admit_only_members() {
        let config: IpRulesConfig =
            palisade_core::parse_fragment("allow: [10.0.0.0/8]\ndeny: [10.6.6.6]\n").expect("valid rules");
        let rules = IpRules::load(&config).expect("loads");
        assert!(rules.permits(ip("10.0.0.1")));
        assert!(!rules.permits(ip("10.6.6.6")));
        assert!(!rules.permits(ip("192.0.2.1")));
        let deny_only: IpRulesConfig = palisade_core::parse_fragment("deny: [192.0.2.0/24]\n").expect("valid");
        let rules = IpRules::load(&deny_only).expect("loads");
        assert!(rules.permits(ip("10.0.0.1")));
        assert!(!rules.permits(ip("192.0.2.9")));
    }

    #[test]
    fn list_files_report_bad_lines_with_their_location() {
        let dir = std::env::temp_dir().join(format!("palisade-ip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("deny.txt");
        std::fs::write(&file, "# blocked\n192.0.2.0/24\n  not-an-ip\n2001:db8::1 # one host\n").expect("write");
        let config = IpRulesConfig {
            deny_files: vec![palisade_core::config::unspanned(file.clone())],
            ..Default::default()
        };
        let errors = IpRules::load(&config).expect_err("bad line");
        assert_eq!((errors.0[0].line, errors.0[0].column), (3, 3));
        std::fs::write(&file, "192.0.2.0/24\n2001:db8::1 # one host\n").expect("write");
        let rules = IpRules::load(&config).expect("loads");
        assert!(!rules.permits(ip("2001:db8::1")));
        assert!(rules.permits(ip("2001:db8::2")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lookups_in_a_large_list_stay_exact() {
        let networks = IpSet::new((0..100_000u32).map(|i| {
            let base = std::net::Ipv4Addr::from(0x0a00_0000 + i * 4);
            IpNet::V4(ipnet::Ipv4Net::new(base, 31).expect("valid prefix"))
        }));
        assert_eq!(networks.len(), 100_000);
        assert!(networks.contains(ip("10.0.0.1")));
        assert!(!networks.contains(ip("10.0.0.2")));
        assert!(networks.contains(ip("10.6.26.125")));
        assert!(!networks.contains(ip("10.6.26.128")));
    }
}
