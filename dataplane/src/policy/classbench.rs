//! Loader for ClassBench rule sets and traces (the standard packet
//! classification benchmark data), for the classifier's tests and
//! benchmark.
//!
//! Rule line (one rule per line, priority = line order, first match wins):
//! `@SRC/LEN DST/LEN SPORT_LO : SPORT_HI DPORT_LO : DPORT_HI 0xPROTO/0xMASK
//! 0xFLAGS/0xMASK`. Trace line (decimal): `src dst sport dport proto flags
//! rule`, where `rule` is the rule the header was generated from — not
//! necessarily its first match, which [`linear_scan`] computes. Flags are
//! parsed and ignored (5-tuple matching only).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::rule::{Action, AddrMatch, PacketKey4, PortRange, Prefix, Priority, Rule, RuleId};

/// The rule sets shipped with the project's data, smallest first.
pub const SETS: [&str; 6] = [
    "acl1_1k", "fw1_1k", "ipc1_1k", "acl1_10k", "fw1_10k", "ipc1_10k",
];

/// Where the data lives: `$CARACAL_CLASSBENCH`, else the shared data folder
/// of the development machines.
pub fn data_dir() -> PathBuf {
    std::env::var_os("CARACAL_CLASSBENCH").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/classbench"
            ))
        },
        PathBuf::from,
    )
}

/// One ClassBench rule, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchRule {
    pub src: Prefix<u32>,
    pub dst: Prefix<u32>,
    pub sport: PortRange,
    pub dport: PortRange,
    pub proto: u8,
    /// 0xff (exact) or 0 (any); ClassBench uses no other mask.
    pub proto_mask: u8,
}

impl BenchRule {
    /// Straightforward field-by-field test, the reference for the
    /// classifier.
    pub fn matches(&self, k: &PacketKey4) -> bool {
        self.src.contains(k.src)
            && self.dst.contains(k.dst)
            && self.sport.contains(k.sport)
            && self.dport.contains(k.dport)
            && k.proto & self.proto_mask == self.proto & self.proto_mask
    }

    /// As a classifier rule with id and priority `index`, action Allow.
    pub fn to_rule(&self, index: u32) -> Rule {
        let net = |p: Prefix<u32>| {
            if p.is_any() {
                AddrMatch::Any
            } else {
                AddrMatch::Nets(vec![p.into()])
            }
        };
        Rule {
            src: net(self.src),
            dst: net(self.dst),
            sport: self.sport,
            dport: self.dport,
            proto: (self.proto_mask == 0xff).then_some(self.proto),
            ..Rule::new(RuleId(index), Priority(index), Action::Allow)
        }
    }
}

/// One trace header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEntry {
    pub key: PacketKey4,
    pub flags: u32,
    /// The rule the header was generated from (0-based).
    pub rule: u32,
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// A file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
}

/// The rules of a rule-set file, in priority order (blank lines skipped).
pub fn parse_rules(text: &str) -> Result<Vec<BenchRule>, ParseError> {
    lines(text)
        .map(|(line, s)| {
            parse_rule(s).map_err(|message| ParseError {
                line,
                message: format!("{message} in rule {s:?}"),
            })
        })
        .collect()
}

/// The headers of a trace file (blank lines skipped).
pub fn parse_trace(text: &str) -> Result<Vec<TraceEntry>, ParseError> {
    lines(text)
        .map(|(line, s)| {
            parse_trace_line(s).map_err(|message| ParseError {
                line,
                message: format!("{message} in trace entry {s:?}"),
            })
        })
        .collect()
}

pub fn load_rules(path: &Path) -> Result<Vec<BenchRule>, LoadError> {
    load(path, parse_rules)
}

pub fn load_trace(path: &Path) -> Result<Vec<TraceEntry>, LoadError> {
    load(path, parse_trace)
}

/// The classifier rules of a rule set: id and priority = line index.
pub fn to_rules(rules: &[BenchRule]) -> Vec<Rule> {
    (0u32..).zip(rules).map(|(i, r)| r.to_rule(i)).collect()
}

/// The index of the first rule matching `key`, by testing every rule in
/// order.
pub fn linear_scan(rules: &[BenchRule], key: &PacketKey4) -> Option<usize> {
    rules.iter().position(|r| r.matches(key))
}

fn load<T>(
    path: &Path,
    parse: fn(&str) -> Result<Vec<T>, ParseError>,
) -> Result<Vec<T>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| LoadError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Non-blank lines with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, s)| (i + 1, s.trim()))
        .filter(|(_, s)| !s.is_empty())
}

fn parse_rule(s: &str) -> Result<BenchRule, String> {
    let t: Vec<&str> = s.split_whitespace().collect();
    let [src, dst, slo, ":", shi, dlo, ":", dhi, proto, flags] = t[..] else {
        return Err("expected `@SRC/LEN DST/LEN LO : HI LO : HI 0xP/0xM 0xF/0xM`".into());
    };
    let src = src
        .strip_prefix('@')
        .ok_or("rule does not start with '@'")?;
    let (proto, proto_mask) = hex_pair(proto, "protocol")?;
    let (proto, proto_mask) = match (u8::try_from(proto), proto_mask) {
        (Ok(p), 0xff) => (p, 0xff),
        (Ok(_), 0) => (0, 0),
        _ => return Err(format!("unsupported protocol {proto:#x}/{proto_mask:#x}")),
    };
    hex_pair(flags, "flags")?;
    Ok(BenchRule {
        src: prefix(src)?,
        dst: prefix(dst)?,
        sport: range(slo, shi)?,
        dport: range(dlo, dhi)?,
        proto,
        proto_mask,
    })
}

fn prefix(s: &str) -> Result<Prefix<u32>, String> {
    let bad = || format!("bad prefix {s:?}");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    Prefix::new(addr.into(), len).map_err(|e| format!("{e} in {s:?}"))
}

fn range(lo: &str, hi: &str) -> Result<PortRange, String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
    PortRange::new(port(lo)?, port(hi)?).map_err(|e| e.to_string())
}

fn hex_pair(s: &str, what: &str) -> Result<(u32, u32), String> {
    let hex = |h: &str| {
        h.strip_prefix("0x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    s.split_once('/')
        .and_then(|(v, m)| Some((hex(v)?, hex(m)?)))
        .ok_or_else(|| format!("bad {what} {s:?}"))
}

fn parse_trace_line(s: &str) -> Result<TraceEntry, String> {
    let t: Vec<&str> = s.split_whitespace().collect();
    let [src, dst, sport, dport, proto, flags, rule] = t[..] else {
        return Err(format!("expected 7 fields, found {}", t.len()));
    };
    fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
        s.parse().map_err(|_| format!("bad {what} {s:?}"))
    }
    Ok(TraceEntry {
        key: PacketKey4::new(
            num(src, "source address")?,
            num(dst, "destination address")?,
            num(proto, "protocol")?,
            num(sport, "source port")?,
            num(dport, "destination port")?,
        ),
        flags: num(flags, "flags")?,
        rule: num(rule, "rule index")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "@176.19.181.33/32\t90.145.23.162/32\t0 : 65535\t1550 : 1550\t0x06/0xFF\t0x0000/0x0200\t\n\
                         @0.0.0.0/0\t72.0.0.0/6\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n\n";

    #[test]
    fn parses_rules() {
        let r = parse_rules(RULES).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].src, Prefix::new(0xb013_b521, 32).unwrap());
        assert_eq!(r[0].dport, PortRange::exact(1550));
        assert_eq!((r[0].proto, r[0].proto_mask), (6, 0xff));
        assert_eq!(r[1].dst, Prefix::new(0x4800_0000, 6).unwrap());
        assert_eq!((r[1].proto, r[1].proto_mask), (0, 0));
        let rule = r[1].to_rule(1);
        assert_eq!((rule.src, rule.proto), (AddrMatch::Any, None));
        let k = PacketKey4::new(0xb013_b521, 0x5a91_17a2, 6, 9, 1550);
        assert_eq!(linear_scan(&r, &k), Some(0));
        let k = PacketKey4::new(1, 0x4b00_0000, 17, 9, 1550);
        assert_eq!(linear_scan(&r, &k), Some(1));
        assert_eq!(linear_scan(&r, &PacketKey4::new(1, 1, 17, 9, 1550)), None);
    }

    #[test]
    fn parses_traces() {
        let t = parse_trace("1483495555\t2954424111\t65535\t1600\t6\t0\t481\n").unwrap();
        assert_eq!(
            t[0].key,
            PacketKey4::new(1483495555, 2954424111, 6, 65535, 1600)
        );
        assert_eq!((t[0].flags, t[0].rule), (0, 481));
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            (
                "@1.2.3.4/33 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF 0x0/0x0",
                "longer than",
            ),
            ("1.2.3.4/32 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF 0x0/0x0", "'@'"),
            (
                "@1.2.3.4/32 0.0.0.0/0 5 : 1 0 : 1 0x06/0xFF 0x0/0x0",
                "empty",
            ),
            (
                "@1.2.3.4/32 0.0.0.0/0 0 : 1 0 : 1 0x06/0x0F 0x0/0x0",
                "unsupported",
            ),
            (
                "@1.2.3.4/32 0.0.0.0/0 0 : 1 0 : 70000 0x06/0xFF 0x0/0x0",
                "bad port",
            ),
            ("@1.2.3.4/32 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF", "expected"),
        ];
        for (line, want) in bad {
            let text = format!("{}\n\n{line}\n", RULES.lines().next().unwrap());
            let e = parse_rules(&text).unwrap_err();
            assert_eq!(e.line, 3, "{line}");
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.to_string().starts_with("line 3: "), "{e}");
        }
        let e = parse_trace("1 2 3 4 6 0 1\n1 2 3 4 6 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: expected 7 fields, found 6 in trace entry \"1 2 3 4 6 0\""
        );
        let e = parse_trace("1 2 3 70000 6 0 1\n").unwrap_err();
        assert!(e.to_string().contains("bad destination port"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let e = load_rules(Path::new("/nonexistent/acl1_1k")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/acl1_1k: "), "{e}");
    }
}
