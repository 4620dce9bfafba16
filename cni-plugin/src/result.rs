//! ADD results (SPEC §5 "ADD Success"): what the agent attached, checked
//! and rendered in the format of the requested version; and the
//! `prevResult` the runtime hands back on CHECK and DEL.
//!
//! Formats by version:
//!
//! - 0.3.0, 0.3.1, 0.4.0: `ips[]` carry `version` (`"4"` / `"6"`); the
//!   interface has `name`, `mac`, `sandbox`.
//! - 1.0.0, 1.1.0: no `ips[].version`; the interface also has `mtu` and,
//!   for memif and vhost-user pods, `socketPath`: the absolute path of the
//!   socket the pod connects to (the field is 1.1.0's; 1.0.0 shares the
//!   result type, see [`CniVersion::has_interface_extras`]).
//!
//! In every version `ips[].interface` indexes `interfaces`, `sandbox` is
//! the pod's netns for a tap interface and absent for socket interfaces,
//! and `dns` is the configuration's `dns` (or `{}`).

use std::net::IpAddr;

use caracal_proto::agent as pb;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

/// DNS settings (SPEC §1 well-known `dns`, §5 result `dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// How the pod reaches the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodInterface {
    /// A kernel interface inside the pod's netns.
    Tap { sandbox: Option<String> },
    /// A shared-memory packet interface; the pod connects to the socket.
    Memif { socket_path: String },
    /// A virtio ring shared over a vhost-user socket.
    VhostUser { socket_path: String },
}

/// One address given to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// One route installed for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// What the agent attached for one ADD, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    pub mac: Option<String>,
    /// Bytes.
    pub mtu: Option<u32>,
    pub interface: PodInterface,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
}

impl Attached {
    /// Checks the agent's answer to an ADD for `ifname`. Anything malformed
    /// is error 999: the agent broke its contract, not the runtime.
    pub fn from_agent(r: pb::CniResult, ifname: &str) -> Result<Attached, CniError> {
        let bad = |what: String| {
            CniError::new(ErrorCode::Plugin, "the agent returned an invalid result")
                .with_details(what)
        };
        if !r.interface_name.is_empty() && r.interface_name != ifname {
            return Err(bad(format!(
                "interface {:?}, but the runtime asked for {ifname:?}",
                r.interface_name
            )));
        }
        let socket = |kind: &str| {
            if r.socket_path.starts_with('/') {
                Ok(r.socket_path.clone())
            } else {
                Err(bad(format!(
                    "{kind} interface with socket path {:?}",
                    r.socket_path
                )))
            }
        };
        let interface = match r.interface_kind.as_str() {
            "" | "tap" => PodInterface::Tap {
                sandbox: non_empty(&r.sandbox),
            },
            "memif" => PodInterface::Memif {
                socket_path: socket("memif")?,
            },
            "vhost-user" => PodInterface::VhostUser {
                socket_path: socket("vhost-user")?,
            },
            other => return Err(bad(format!("unknown interface kind {other:?}"))),
        };
        let addr = |s: &str| -> Result<Option<IpAddr>, CniError> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|_| bad(format!("{s:?} is not an IP address")))
        };
        let net = |s: &str| -> Result<IpNet, CniError> {
            s.parse()
                .map_err(|_| bad(format!("{s:?} is not an address in CIDR notation")))
        };
        let ips = r
            .ips
            .iter()
            .map(|ip| {
                Ok(IpConfig {
                    address: net(&ip.address)?,
                    gateway: addr(&ip.gateway)?,
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        if ips.is_empty() {
            return Err(bad("no addresses".into()));
        }
        let routes = r
            .routes
            .iter()
            .map(|rt| {
                Ok(Route {
                    dst: net(&rt.dst)?,
                    gw: addr(&rt.gw)?,
                })
            })
            .collect::<Result<Vec<_>, CniError>>()?;
        Ok(Attached {
            ifname: ifname.to_owned(),
            mac: non_empty(&r.mac),
            mtu: (r.mtu != 0).then_some(r.mtu),
            interface,
            ips,
            routes,
        })
    }

    /// The result JSON in `version`'s format. With a `prev` result (a
    /// chained ADD) the interface, addresses and routes are appended to it,
    /// as SPEC §2 asks of a plugin handed a `prevResult`.
    pub fn render(
        &self,
        version: CniVersion,
        dns: Option<&Dns>,
        prev: Option<&PrevResult>,
    ) -> Value {
        let index = prev.map_or(0, |p| p.interfaces.len());
        let extras = version.has_interface_extras();
        let (sandbox, socket_path) = match &self.interface {
            PodInterface::Tap { sandbox } => (sandbox.as_deref(), None),
            PodInterface::Memif { socket_path } | PodInterface::VhostUser { socket_path } => {
                (None, Some(socket_path.as_str()))
            }
        };
        let interface = InterfaceDoc {
            name: &self.ifname,
            mac: self.mac.as_deref(),
            mtu: self.mtu.filter(|_| extras),
            sandbox,
            socket_path: socket_path.filter(|_| extras),
        };
        let ips: Vec<IpDoc> = self
            .ips
            .iter()
            .map(|ip| IpDoc {
                version: version.ips_carry_version().then_some(match ip.address {
                    IpNet::V4(_) => "4",
                    IpNet::V6(_) => "6",
                }),
                address: ip.address,
                gateway: ip.gateway,
                interface: index,
            })
            .collect();
        let routes: Vec<RouteDoc> = self
            .routes
            .iter()
            .map(|r| RouteDoc {
                dst: r.dst,
                gw: r.gw,
            })
            .collect();
        let Some(prev) = prev else {
            return json!({
                "cniVersion": version.as_str(),
                "interfaces": [interface],
                "ips": ips,
                "routes": routes,
                "dns": dns.cloned().unwrap_or_default(),
            });
        };
        let mut out = prev.raw.clone();
        out.insert("cniVersion".into(), version.as_str().into());
        let mut append = |key: &str, items: Value| {
            let list = out.entry(key).or_insert_with(|| json!([]));
            if let (Some(list), Value::Array(items)) = (list.as_array_mut(), items) {
                list.extend(items);
            }
        };
        append("interfaces", json!([interface]));
        append("ips", json!(ips));
        append("routes", json!(routes));
        if let Some(dns) = dns {
            out.entry("dns").or_insert_with(|| json!(dns));
        }
        Value::Object(out)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceDoc<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
}

#[derive(Serialize)]
struct IpDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    interface: usize,
}

#[derive(Serialize)]
struct RouteDoc {
    dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A `prevResult`, in any supported version's format: the parts the plugin
/// reads, plus the whole object to pass on when chained.
#[derive(Debug, Clone, PartialEq)]
pub struct PrevResult {
    raw: Map<String, Value>,
    interfaces: Vec<PrevInterface>,
    ips: Vec<PrevIp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct PrevInterface {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct PrevIp {
    address: String,
    #[serde(default)]
    interface: Option<usize>,
}

/// The lists a result may carry; `null` reads as empty.
#[derive(Deserialize)]
struct PrevLists {
    #[serde(default)]
    interfaces: Option<Vec<PrevInterface>>,
    #[serde(default)]
    ips: Option<Vec<PrevIp>>,
}

impl PrevResult {
    /// Decodes a `prevResult`; a malformed one is error 6.
    pub fn parse(v: &Value) -> Result<PrevResult, CniError> {
        let bad = |why: String| {
            CniError::new(ErrorCode::Decode, "cannot decode prevResult").with_details(why)
        };
        let raw = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?
            .clone();
        let PrevLists { interfaces, ips } =
            PrevLists::deserialize(v).map_err(|e| bad(e.to_string()))?;
        let (interfaces, ips) = (interfaces.unwrap_or_default(), ips.unwrap_or_default());
        for (i, ip) in ips.iter().enumerate() {
            if ip.address.parse::<IpNet>().is_err() {
                return Err(bad(format!(
                    "ips[{i}].address {:?} is not in CIDR notation",
                    ip.address
                )));
            }
            if ip.interface.is_some_and(|n| n >= interfaces.len()) {
                return Err(bad(format!(
                    "ips[{i}].interface is past the end of interfaces"
                )));
            }
        }
        Ok(PrevResult {
            raw,
            interfaces,
            ips,
        })
    }

    /// Whether the result lists an interface named `ifname`.
    pub fn has_interface(&self, ifname: &str) -> bool {
        self.interfaces.iter().any(|i| i.name == ifname)
    }

    /// The addresses (CIDR strings) on `ifname`, plus those bound to no
    /// interface.
    pub fn addresses_of(&self, ifname: &str) -> Vec<String> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(n) => self.interfaces[n].name == ifname,
            })
            .map(|ip| ip.address.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_result(kind: &str, socket: &str) -> pb::CniResult {
        pb::CniResult {
            interface_name: "eth0".into(),
            mac: "02:ca:ca:00:00:05".into(),
            sandbox: if kind == "tap" {
                "/var/run/netns/cni-1".into()
            } else {
                String::new()
            },
            interface_kind: kind.into(),
            socket_path: socket.into(),
            mtu: 1450,
            ips: vec![
                pb::CniIp {
                    address: "10.65.0.5/32".into(),
                    gateway: String::new(),
                },
                pb::CniIp {
                    address: "fd00:65::5/128".into(),
                    gateway: String::new(),
                },
            ],
            routes: vec![
                pb::CniRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: "169.254.1.1".into(),
                },
                pb::CniRoute {
                    dst: "::/0".into(),
                    gw: "fe80::ecee:eeff:feee:eeee".into(),
                },
            ],
        }
    }

    fn tap() -> Attached {
        Attached::from_agent(agent_result("tap", ""), "eth0").unwrap()
    }

    const ROUTES: &str = r#"[
        {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
        {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}
    ]"#;

    #[test]
    fn renders_0_x_with_ip_versions_and_no_extras() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let got = tap().render(v, None, None);
            let want = json!({
                "cniVersion": v.as_str(),
                "interfaces": [
                    {"name": "eth0", "mac": "02:ca:ca:00:00:05", "sandbox": "/var/run/netns/cni-1"}
                ],
                "ips": [
                    {"version": "4", "address": "10.65.0.5/32", "interface": 0},
                    {"version": "6", "address": "fd00:65::5/128", "interface": 0}
                ],
                "routes": serde_json::from_str::<Value>(ROUTES).unwrap(),
                "dns": {},
            });
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn renders_1_x_without_ip_versions_and_with_mtu() {
        for v in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let got = tap().render(v, None, None);
            let want = json!({
                "cniVersion": v.as_str(),
                "interfaces": [{
                    "name": "eth0", "mac": "02:ca:ca:00:00:05", "mtu": 1450,
                    "sandbox": "/var/run/netns/cni-1"
                }],
                "ips": [
                    {"address": "10.65.0.5/32", "interface": 0},
                    {"address": "fd00:65::5/128", "interface": 0}
                ],
                "routes": serde_json::from_str::<Value>(ROUTES).unwrap(),
                "dns": {},
            });
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn socket_interfaces_report_their_socket_and_no_sandbox() {
        for kind in ["memif", "vhost-user"] {
            let a = Attached::from_agent(
                agent_result(kind, "/run/caracal/sockets/default-web-0.sock"),
                "eth0",
            )
            .unwrap();
            let got = a.render(CniVersion::V1_1_0, None, None);
            assert_eq!(
                got["interfaces"][0],
                json!({
                    "name": "eth0", "mac": "02:ca:ca:00:00:05", "mtu": 1450,
                    "socketPath": "/run/caracal/sockets/default-web-0.sock"
                }),
                "{kind}"
            );
            let old = a.render(CniVersion::V0_4_0, None, None);
            assert_eq!(
                old["interfaces"][0],
                json!({"name": "eth0", "mac": "02:ca:ca:00:00:05"}),
                "{kind}"
            );
        }
    }

    #[test]
    fn gateways_and_dns_are_carried() {
        let mut r = agent_result("tap", "");
        r.ips[0].gateway = "10.65.0.1".into();
        r.routes[0].gw = String::new();
        let dns = Dns {
            nameservers: vec!["10.96.0.10".into()],
            search: vec!["svc.cluster.local".into()],
            ..Dns::default()
        };
        let got =
            Attached::from_agent(r, "eth0")
                .unwrap()
                .render(CniVersion::V1_1_0, Some(&dns), None);
        assert_eq!(
            got["ips"][0],
            json!({"address": "10.65.0.5/32", "gateway": "10.65.0.1", "interface": 0})
        );
        assert_eq!(got["routes"][0], json!({"dst": "0.0.0.0/0"}));
        assert_eq!(
            got["dns"],
            json!({"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]})
        );
    }

    #[test]
    fn an_empty_interface_name_means_the_requested_one() {
        let mut r = agent_result("tap", "");
        r.interface_name.clear();
        assert_eq!(Attached::from_agent(r, "net1").unwrap().ifname, "net1");
    }

    #[test]
    fn refuses_malformed_agent_answers() {
        type Breakage = fn(&mut pb::CniResult);
        let cases: [(&str, Breakage); 8] = [
            ("wrong name", |r| r.interface_name = "eth9".into()),
            ("bad kind", |r| r.interface_kind = "veth".into()),
            ("memif without socket", |r| {
                r.interface_kind = "memif".into()
            }),
            ("relative socket", |r| {
                r.interface_kind = "vhost-user".into();
                r.socket_path = "x.sock".into();
            }),
            ("bad address", |r| r.ips[0].address = "10.65.0.5".into()),
            ("bad gateway", |r| r.ips[0].gateway = "gw".into()),
            ("bad route", |r| r.routes[1].dst = "default".into()),
            ("no addresses", |r| r.ips.clear()),
        ];
        for (what, break_it) in cases {
            let mut r = agent_result("tap", "");
            break_it(&mut r);
            let err = Attached::from_agent(r, "eth0").unwrap_err();
            assert_eq!(err.code, ErrorCode::Plugin, "{what}");
        }
    }

    #[test]
    fn reads_the_addresses_of_an_interface_from_a_prev_result() {
        let prev = PrevResult::parse(&json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "cali0"}, {"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"version": "4", "address": "10.65.0.5/32", "interface": 1},
                {"version": "4", "address": "10.1.0.1/32", "interface": 0},
                {"version": "6", "address": "fd00:65::5/128"}
            ],
            "routes": null,
        }))
        .unwrap();
        assert!(prev.has_interface("eth0"));
        assert!(!prev.has_interface("net1"));
        assert_eq!(
            prev.addresses_of("eth0"),
            ["10.65.0.5/32", "fd00:65::5/128"]
        );
        assert_eq!(prev.addresses_of("net1"), ["fd00:65::5/128"]);
    }

    #[test]
    fn refuses_malformed_prev_results() {
        for bad in [
            json!([]),
            json!({"interfaces": {}}),
            json!({"ips": "10.0.0.1/32"}),
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{"address": "10.0.0.1/32", "interface": 0}]}),
            json!({"interfaces": [{"mac": "x"}]}),
        ] {
            let err = PrevResult::parse(&bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::Decode, "{bad}");
        }
        assert!(PrevResult::parse(&json!({})).is_ok());
    }

    #[test]
    fn a_chained_add_appends_to_the_prev_result() {
        let prev = PrevResult::parse(&json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo0"}],
            "ips": [{"address": "192.0.2.1/32", "interface": 0}],
            "dns": {"nameservers": ["192.0.2.53"]},
            "custom": true,
        }))
        .unwrap();
        let dns = Dns {
            nameservers: vec!["10.96.0.10".into()],
            ..Dns::default()
        };
        let got = tap().render(CniVersion::V1_1_0, Some(&dns), Some(&prev));
        assert_eq!(got["cniVersion"], "1.1.0");
        assert_eq!(got["custom"], true);
        assert_eq!(got["interfaces"][0]["name"], "lo0");
        assert_eq!(got["interfaces"][1]["name"], "eth0");
        assert_eq!(got["ips"].as_array().unwrap().len(), 3);
        assert_eq!(got["ips"][1]["interface"], 1);
        assert_eq!(got["ips"][2]["interface"], 1);
        assert_eq!(got["routes"].as_array().unwrap().len(), 2);
        assert_eq!(got["dns"], json!({"nameservers": ["192.0.2.53"]}), "kept");
    }
}
