//! IP address -> (city, country), for profiles that keep a location but never an IP.
//!
//! [`GeoLookup`] is the seam: [`CidrTable`] reads a small offline CSV
//! (`cidr,city,country` per line, `#` comments), enough for tests, demos and a
//! deployment with a curated table; a GeoIP database can implement the trait.

use std::net::IpAddr;
use std::path::Path;

/// Where an address is, as coarse as a profile may keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// Looks up the place of an IP address.
pub trait GeoLookup: Send + Sync + std::fmt::Debug {
    fn locate(&self, ip: IpAddr) -> Option<Place>;
}

/// A list of networks, longest prefix wins.
#[derive(Debug, Clone, Default)]
pub struct CidrTable {
    networks: Vec<(IpAddr, u8, Place)>,
}

/// A line of the table that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {problem} (expected `cidr,city,country`, e.g. `192.0.2.0/24,Oslo,NO`)")]
pub struct CidrError {
    pub line: usize,
    pub problem: &'static str,
}

fn masked_eq(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let (a, b, bits): (u128, u128, u32) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let prefix = u32::from(prefix).min(bits);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

impl CidrTable {
    /// Parse the CSV text.
    ///
    /// # Errors
    /// The first unusable line (its number and what is wrong; never its text).
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let mut networks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem| CidrError {
                line: line_no,
                problem,
            };
            let mut parts = line.splitn(3, ',').map(str::trim);
            let (Some(cidr), Some(city), Some(country)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(err("three comma-separated fields needed"));
            };
            let (addr, prefix) = cidr.split_once('/').ok_or_else(|| err("no /prefix"))?;
            let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
            let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
            if prefix > if addr.is_ipv4() { 32 } else { 128 } {
                return Err(err("prefix length too long"));
            }
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err("country must be two capital letters (ISO 3166-1)"));
            }
            networks.push((
                addr,
                prefix,
                Place {
                    city: (!city.is_empty()).then(|| city.to_owned()),
                    country: country.to_owned(),
                },
            ));
        }
        // Longest prefix first: the first match is the most specific.
        networks.sort_by_key(|n| std::cmp::Reverse(n.1));
        Ok(Self { networks })
    }

    /// Read a table file.
    ///
    /// # Errors
    /// Unreadable file or an unusable line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl GeoLookup for CidrTable {
    fn locate(&self, ip: IpAddr) -> Option<Place> {
        self.networks
            .iter()
            .find(|(net, prefix, _)| masked_eq(*net, ip, *prefix))
            .map(|(_, _, place)| place.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_families_do_not_mix() {
        let t = CidrTable::parse(
            "# test table\n10.0.0.0/8,,NO\n10.1.0.0/16,Bergen,NO\n2001:db8::/32,Oslo,NO\n",
        )
        .unwrap();
        let at = |s: &str| t.locate(s.parse().unwrap());
        assert_eq!(at("10.1.2.3").unwrap().city.as_deref(), Some("Bergen"));
        assert_eq!(
            at("10.9.2.3").unwrap(),
            Place {
                city: None,
                country: "NO".into()
            }
        );
        assert_eq!(at("2001:db8::1").unwrap().city.as_deref(), Some("Oslo"));
        assert_eq!(at("192.0.2.1"), None);
        assert_eq!(at("::ffff:10.1.2.3"), None);
    }

    #[test]
    fn bad_lines_name_the_line_not_the_text() {
        let e = CidrTable::parse("10.0.0.0/8,Oslo,NO\n10.0.0.0/40,Oslo,NO").unwrap_err();
        assert_eq!(e.line, 2);
        let e = CidrTable::parse("secret-ip,Oslo,NO").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
