//! Kubernetes NetworkPolicy end to end, through the real binaries (`caracalctl
//! lab`, `caracal-dataplane`, `caracal-agent`, `caracal`): a representative
//! set of the upstream e2e cases (`test/e2e/network/netpol/network_policy.go`)
//! on their cluster: namespaces x, y, z (prefixed per test run), pods a, b,
//! c in each, every pod serving TCP and UDP on ports 80 and 81. Each case
//! applies its policies with `lab apply`, probes every pod pair in
//! parallel and compares with its truth table, then deletes them.
//!
//! Besides the truth tables: a TCP connection that a `lab apply` denies
//! stops within a second while one that stays allowed keeps flowing, and
//! a burst of 100 policy updates under sequence-numbered UDP traffic loses
//! no packet the policy allows and lets through none it denies, judged
//! against the policy in force when each packet crossed the dataplane.
//!
//! SCTP is probed too, on ports 80 and 81 like TCP and UDP: the kernel
//! here has no SCTP stack, so the pods speak the first half of SCTP's
//! handshake over raw sockets (see `sctp`).
//!
//! Needs root. Skipped otherwise, unless `CARACAL_REQUIRE_PRIVILEGED=1`,
//! which makes a missing privilege fail.

mod lab_support;
mod sctp;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lab_support::{in_netns, privileged, TestLab};
use serde_json::Value;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
/// How long a probe waits for an answer: a denied probe costs this much.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The time origin of every timestamp in this file.
fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[derive(Debug, Clone)]
struct Pod {
    /// x, y or z.
    ns: String,
    name: String,
    netns: String,
    v4: IpAddr,
    v6: IpAddr,
}

impl Pod {
    fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn is(&self, id: &str) -> bool {
        self.id() == id
    }

    fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The cluster: a lab, its nine pods serving, a folder for policies.
struct Cluster {
    lab: TestLab,
    pods: Vec<Pod>,
    policies: PathBuf,
}

/// Namespace `ns` labelled `ns: <ns>`, plus `extra` labels (`k: v, ...`).
fn namespace_yaml(lab: &TestLab, ns: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels: {{ns: {ns}{}}}\n---\n",
        lab.ns(ns),
        if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        }
    )
}

/// A pod labelled `pod: <name>` (plus `extra` labels) with the upstream
/// e2e's named container ports.
fn pod_yaml(lab: &TestLab, ns: &str, name: &str, extra: &str) -> String {
    let mut ports = String::new();
    for port in [80, 81] {
        for proto in ["TCP", "UDP", "SCTP"] {
            ports += &format!(
                "    - {{name: serve-{port}-{}, containerPort: {port}, protocol: {proto}}}\n",
                proto.to_lowercase()
            );
        }
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {}\n  labels: {{pod: {name}{}}}\n\
         spec:\n  containers:\n  - name: c\n    image: i\n    ports:\n{ports}---\n",
        lab.ns(ns),
        if extra.is_empty() { String::new() } else { format!(", {extra}") }
    )
}

/// Echoes every TCP connection and UDP datagram on `port`, for good.
fn serve(netns: &str, port: u16) {
    let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    let (tcp, udp) = in_netns(netns, || {
        (
            TcpListener::bind(addr).expect("bind tcp"),
            UdpSocket::bind(addr).expect("bind udp"),
        )
    });
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], peer);
        }
    });
}

impl Cluster {
    fn up() -> Cluster {
        let lab = TestLab::new("np");
        let mut yaml = String::new();
        for ns in NAMESPACES {
            yaml += &namespace_yaml(&lab, ns, "");
            for pod in PODS {
                yaml += &pod_yaml(&lab, ns, pod, "");
            }
        }
        std::fs::write(lab.manifests.join("cluster.yaml"), yaml).unwrap();
        let up = lab.ok(&["up", lab.manifests.to_str().unwrap()]);
        assert!(up.contains("9 pods ready"), "{up}");
        let status: Value = lab.status();
        let pods: Vec<Pod> = status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let namespace = p["namespace"].as_str().unwrap();
                let ips: Vec<IpAddr> = p["ips"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().parse().unwrap())
                    .collect();
                Pod {
                    ns: namespace.rsplit('-').next().unwrap().to_owned(),
                    name: p["name"].as_str().unwrap().to_owned(),
                    netns: p["netns"].as_str().unwrap().to_owned(),
                    v4: *ips.iter().find(|i| i.is_ipv4()).expect("an IPv4 address"),
                    v6: *ips.iter().find(|i| i.is_ipv6()).expect("an IPv6 address"),
                }
            })
            .collect();
        assert_eq!(pods.len(), 9);
        for p in &pods {
            serve(&p.netns, 80);
            serve(&p.netns, 81);
            sctp::serve(&p.netns, &[80, 81]);
        }
        sctp::self_check(&pods[0].netns);
        let policies = lab.state.parent().unwrap().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        Cluster {
            lab,
            pods,
            policies,
        }
    }

    fn pod(&self, id: &str) -> &Pod {
        self.pods.iter().find(|p| p.is(id)).unwrap()
    }

    /// Writes `yaml` (NetworkPolicies; `NS-x` stands for namespace x) to a
    /// file and returns its path.
    fn policy_file(&self, name: &str, yaml: &str) -> String {
        let mut text = yaml.to_owned();
        for ns in NAMESPACES {
            text = text.replace(&format!("NS-{ns}"), &self.lab.ns(ns));
        }
        let path = self.policies.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn apply(&self, file: &str) {
        self.lab.ok(&["apply", "-f", file]);
    }

    fn delete(&self, file: &str) {
        self.lab.ok(&["delete", "-f", file]);
    }
}

/// One TCP connection carrying a byte each way.
fn probe_tcp(from: &Pod, addr: SocketAddr) -> bool {
    let Ok(mut s) = in_netns(&from.netns, || {
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
    }) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    let mut b = [0u8; 1];
    s.write_all(b"p").is_ok() && s.read_exact(&mut b).is_ok() && b == *b"p"
}

/// A UDP datagram and its echo; three tries within the timeout.
fn probe_udp(from: &Pod, addr: SocketAddr) -> bool {
    let any: IpAddr = if addr.is_ipv4() {
        "0.0.0.0".parse().unwrap()
    } else {
        "::".parse().unwrap()
    };
    let Ok(u) = in_netns(&from.netns, || UdpSocket::bind(SocketAddr::new(any, 0))) else {
        return false;
    };
    let _ = u.set_read_timeout(Some(PROBE_TIMEOUT / 3));
    let mut b = [0u8; 16];
    for _ in 0..3 {
        if u.send_to(b"probe", addr).is_err() {
            return false;
        }
        if let Ok((n, peer)) = u.recv_from(&mut b) {
            if peer == addr && &b[..n] == b"probe" {
                return true;
            }
        }
    }
    false
}

fn probe(from: &Pod, to: &Pod, check: Check) -> bool {
    let addr = SocketAddr::new(to.ip(check.family), check.port);
    match check.proto {
        Proto::Tcp => probe_tcp(from, addr),
        Proto::Udp => probe_udp(from, addr),
        Proto::Sctp => sctp::probe(&from.netns, addr, PROBE_TIMEOUT),
    }
}

#[derive(Debug, Clone, Copy)]
struct Check {
    proto: Proto,
    port: u16,
    family: Family,
}

impl Check {
    const fn new(proto: Proto, port: u16, family: Family) -> Check {
        Check {
            proto,
            port,
            family,
        }
    }
}

const TCP80: Check = Check::new(Proto::Tcp, 80, Family::V4);
const TCP81: Check = Check::new(Proto::Tcp, 81, Family::V4);
const UDP80: Check = Check::new(Proto::Udp, 80, Family::V4);
const UDP81: Check = Check::new(Proto::Udp, 81, Family::V4);
const SCTP80: Check = Check::new(Proto::Sctp, 80, Family::V4);
const SCTP81: Check = Check::new(Proto::Sctp, 81, Family::V4);
const TCP80_V6: Check = Check::new(Proto::Tcp, 80, Family::V6);
const SCTP80_V6: Check = Check::new(Proto::Sctp, 80, Family::V6);

type Truth = fn(&Pod, &Pod) -> bool;

/// A case: its policies and, per probe kind, who may reach whom.
struct Case {
    name: &'static str,
    yaml: String,
    checks: Vec<(Check, Truth)>,
    /// For the cases about updates: what changes next, and the truth
    /// after it.
    then: Option<Then>,
}

/// A change made while a case's policies are in force: pods or namespaces
/// relabelled (`undo` puts the labels back afterwards) or the case's
/// policies rewritten (`undo` empty).
struct Then {
    yaml: String,
    undo: String,
    checks: Vec<(Check, Truth)>,
}

impl Case {
    fn new(name: &'static str, yaml: String, checks: Vec<(Check, Truth)>) -> Case {
        Case {
            name,
            yaml,
            checks,
            then: None,
        }
    }
}

/// Probes every ordered pair of distinct pods for `check` in parallel;
/// returns the pairs whose answer differs from `truth` (expected-allowed
/// failures are retried once).
fn mismatches(c: &Cluster, check: Check, truth: Truth) -> Vec<String> {
    let pairs: Vec<(&Pod, &Pod)> = c
        .pods
        .iter()
        .flat_map(|a| c.pods.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a.id() != b.id())
        .collect();
    let got: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(a, b)| s.spawn(move || probe(a, b, check)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut out = Vec::new();
    for ((a, b), got) in pairs.iter().zip(got) {
        let want = truth(a, b);
        let got = got || (want && probe(a, b, check));
        if got != want {
            out.push(format!(
                "{} -> {}: expected {}, got {}",
                a.id(),
                b.id(),
                if want { "allow" } else { "deny" },
                if got { "allow" } else { "deny" }
            ));
        }
    }
    out
}

fn policy(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: NS-{ns}\nspec:\n{spec}---\n"
    )
}

fn cases(c: &Cluster) -> Vec<Case> {
    let yb = c.pod("y/b").v4;
    let zc = c.pod("z/c").v4;
    vec![
        Case {
            name: "default deny ingress",
            yaml: policy(
                "deny-ingress",
                "x",
                "  podSelector: {}\n  policyTypes: [Ingress]\n",
            ),
            checks: vec![
                (TCP80, |_, to| to.ns != "x"),
                (UDP81, |_, to| to.ns != "x"),
                (SCTP80, |_, to| to.ns != "x"),
            ],
            then: None,
        },
        Case {
            name: "allow all ingress beside a default deny",
            yaml: policy(
                "deny-ingress",
                "x",
                "  podSelector: {}\n  policyTypes: [Ingress]\n",
            ) + &policy("allow-all", "x", "  podSelector: {}\n  ingress:\n  - {}\n"),
            checks: vec![(TCP80, |_, _| true)],
            then: None,
        },
        Case {
            name: "default deny egress",
            yaml: policy(
                "deny-egress",
                "x",
                "  podSelector: {}\n  policyTypes: [Egress]\n",
            ),
            checks: vec![
                (TCP80, |from, _| from.ns != "x"),
                (UDP80, |from, _| from.ns != "x"),
                (SCTP81, |from, _| from.ns != "x"),
            ],
            then: None,
        },
        Case {
            name: "allow by pod selector (IPv4 and IPv6)",
            yaml: policy(
                "allow-b",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
            ),
            checks: vec![
                (TCP80, |from, to| !to.is("x/a") || from.is("x/b")),
                (TCP80_V6, |from, to| !to.is("x/a") || from.is("x/b")),
                (SCTP80_V6, |from, to| !to.is("x/a") || from.is("x/b")),
            ],
            then: None,
        },
        Case {
            name: "allow by namespace selector",
            yaml: policy(
                "allow-ns-y",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
            ),
            checks: vec![(TCP80, |from, to| !to.is("x/a") || from.ns == "y")],
            then: None,
        },
        Case {
            name: "allow by namespace and pod selector combined",
            yaml: policy(
                "allow-y-b",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
            ),
            checks: vec![
                (TCP80, |from, to| !to.is("x/a") || from.is("y/b")),
                (SCTP80, |from, to| !to.is("x/a") || from.is("y/b")),
            ],
            then: None,
        },
        Case {
            name: "matchExpressions on pods and namespaces",
            yaml: policy(
                "expressions",
                "x",
                "  podSelector:\n    matchExpressions: [{key: pod, operator: In, values: [a]}]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [NS-y, NS-z]}]\n      podSelector:\n        matchExpressions: [{key: pod, operator: NotIn, values: [c]}]\n",
            ),
            checks: vec![(TCP80, |from, to| {
                !to.is("x/a") || (from.ns != "x" && from.name != "c")
            })],
            then: None,
        },
        Case {
            name: "egress to an ipBlock with except",
            yaml: policy(
                "except-y-b",
                "x",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [{yb}/32]}}\n"
                ),
            ),
            checks: vec![(TCP80, |from, to| !from.is("x/a") || !to.is("y/b"))],
            then: None,
        },
        Case {
            name: "ingress from an ipBlock",
            yaml: policy(
                "from-z-c",
                "x",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: {zc}/32}}\n"
                ),
            ),
            checks: vec![(TCP80, |from, to| !to.is("x/a") || from.is("z/c"))],
            then: None,
        },
        Case {
            name: "numeric port",
            yaml: policy(
                "port-81",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, protocol: TCP}\n",
            ),
            checks: vec![
                (TCP80, |_, to| !to.is("x/a")),
                (TCP81, |_, _| true),
                (UDP81, |_, to| !to.is("x/a")),
                (SCTP81, |_, to| !to.is("x/a")),
            ],
            then: None,
        },
        Case {
            name: "a policy that names only SCTP denies TCP and UDP on that port",
            yaml: policy(
                "sctp-80",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 80, protocol: SCTP}\n",
            ),
            checks: vec![
                (SCTP80, |_, _| true),
                (SCTP81, |_, to| !to.is("x/a")),
                (TCP80, |_, to| !to.is("x/a")),
                (UDP80, |_, to| !to.is("x/a")),
            ],
            then: None,
        },
        Case {
            name: "SCTP from a pod in another namespace by named port",
            yaml: policy(
                "sctp-named",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n    ports:\n    - {port: serve-81-sctp, protocol: SCTP}\n",
            ),
            checks: vec![
                (SCTP81, |from, to| !to.is("x/a") || from.is("y/b")),
                (SCTP80, |_, to| !to.is("x/a")),
                (TCP81, |_, to| !to.is("x/a")),
            ],
            then: None,
        },
        Case {
            name: "named ports",
            yaml: policy(
                "named",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: serve-81-tcp}\n    - {port: serve-80-udp, protocol: UDP}\n",
            ),
            checks: vec![
                (TCP80, |_, to| !to.is("x/a")),
                (TCP81, |_, _| true),
                (UDP80, |_, _| true),
                (UDP81, |_, to| !to.is("x/a")),
            ],
            then: None,
        },
        Case {
            name: "endPort range",
            yaml: policy(
                "range",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 90, protocol: TCP}\n",
            ),
            checks: vec![(TCP80, |_, to| !to.is("x/a")), (TCP81, |_, _| true)],
            then: None,
        },
        Case {
            name: "egress and ingress both required",
            yaml: policy(
                "a-to-y-b",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
            ) + &policy(
                "y-b-from-x-c",
                "y",
                "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: c}}\n",
            ),
            checks: vec![(TCP80, |from, to| {
                (!from.is("x/a") || to.is("y/b")) && (!to.is("y/b") || from.is("x/c"))
            })],
            then: None,
        },
        Case {
            name: "policyTypes default: egress rules isolate both ways, ingress rules one way",
            yaml: policy(
                "egress-rules",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
            ) + &policy(
                "ingress-rules",
                "x",
                "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - podSelector: {}\n",
            ),
            checks: vec![(TCP80, |from, to| {
                !to.is("x/a") && (!from.is("x/a") || to.ns == "y") && (!to.is("x/b") || from.ns == "x")
            })],
            then: None,
        },
        Case {
            name: "TCP replies pass an egress deny",
            yaml: policy(
                "y-b-closed",
                "y",
                "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: a}}\n",
            ),
            checks: vec![(TCP80, |from, to| (!to.is("y/b") || from.is("x/a")) && !from.is("y/b"))],
            then: None,
        },
        Case {
            name: "UDP request and response through ingress-only policies",
            yaml: policy(
                "x-a-closed",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n",
            ) + &policy(
                "y-b-udp-from-x-a",
                "y",
                "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: a}}\n    ports:\n    - {port: 80, protocol: UDP}\n",
            ),
            checks: vec![(UDP80, |from, to| !to.is("x/a") && (!to.is("y/b") || from.is("x/a")))],
            then: None,
        },
        Case::new(
            "default deny all (ingress and egress)",
            policy(
                "deny-all",
                "x",
                "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
            ),
            vec![
                (TCP80, |from, to| from.ns != "x" && to.ns != "x"),
                (UDP81, |from, to| from.ns != "x" && to.ns != "x"),
            ],
        ),
        Case::new(
            "ingress from pods within the namespace only",
            policy(
                "same-ns",
                "x",
                "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n",
            ),
            vec![(TCP80, |from, to| to.ns != "x" || from.ns == "x")],
        ),
        Case::new(
            "pods of a label in all namespaces (empty namespaceSelector)",
            policy(
                "b-anywhere",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n",
            ),
            vec![(TCP80, |from, to| !to.is("x/a") || from.name == "b")],
        ),
        Case::new(
            "pod selector or namespace selector (two peers)",
            policy(
                "b-or-y",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
            ),
            vec![(TCP80, |from, to| !to.is("x/a") || from.is("x/b") || from.ns == "y")],
        ),
        Case::new(
            "any of several pod selectors",
            policy(
                "b-or-c",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - podSelector: {matchLabels: {pod: c}}\n",
            ),
            vec![(TCP80, |from, to| !to.is("x/a") || from.is("x/b") || from.is("x/c"))],
        ),
        Case::new(
            "multiple pod and namespace expressions (NotIn namespaces, In pods)",
            policy(
                "not-x-b-or-c",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]\n      podSelector:\n        matchExpressions: [{key: pod, operator: In, values: [b, c]}]\n",
            ),
            vec![(TCP80, |from, to| !to.is("x/a") || (from.ns != "x" && from.name != "a"))],
        ),
        Case::new(
            "Exists and DoesNotExist",
            policy(
                "exists",
                "x",
                "  podSelector:\n    matchExpressions: [{key: pod, operator: Exists}, {key: missing, operator: DoesNotExist}]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: ns, operator: Exists}]\n      podSelector:\n        matchExpressions: [{key: pod, operator: In, values: [c]}]\n",
            ),
            vec![(TCP80, |from, to| to.ns != "x" || from.name == "c")],
        ),
        Case::new(
            "namespace by its default label kubernetes.io/metadata.name",
            policy(
                "default-label",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NS-z}}\n",
            ),
            vec![(TCP80, |from, to| !to.is("x/a") || from.ns == "z")],
        ),
        Case::new(
            "stacked policies with overlapping pod selectors add up",
            policy(
                "port-80-from-b",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    ports:\n    - {port: 80, protocol: TCP}\n",
            ) + &policy(
                "port-81-from-all",
                "x",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 81, protocol: TCP}\n",
            ),
            vec![
                (TCP80, |from, to| to.ns != "x" || (from.is("x/b") && to.is("x/a"))),
                (TCP81, |_, _| true),
            ],
        ),
        Case::new(
            "an allow-all ingress policy wins over a narrower one",
            policy(
                "narrow",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
            ) + &policy("all", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - {}\n"),
            vec![(TCP80, |_, _| true)],
        ),
        Case::new(
            "an allow-all egress policy wins over a narrower one",
            policy(
                "narrow",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {pod: b}}\n",
            ) + &policy(
                "all",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - {}\n",
            ),
            vec![(TCP80, |_, _| true)],
        ),
        Case::new(
            "egress on one named port (resolved on the destination pods)",
            policy(
                "egress-named",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {port: serve-81-udp, protocol: UDP}\n",
            ),
            vec![
                (UDP81, |_, _| true),
                (UDP80, |from, _| !from.is("x/a")),
                (TCP81, |from, _| !from.is("x/a")),
            ],
        ),
        Case::new(
            "ingress on a protocol, any port",
            policy(
                "udp-any-port",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: UDP}\n",
            ),
            vec![
                (UDP80, |_, _| true),
                (UDP81, |_, _| true),
                (TCP80, |_, to| !to.is("x/a")),
                (SCTP81, |_, to| !to.is("x/a")),
            ],
        ),
        Case::new(
            "a policy that names only UDP denies TCP",
            policy(
                "udp-81",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, protocol: UDP}\n",
            ),
            vec![(UDP81, |_, _| true), (TCP81, |_, to| !to.is("x/a"))],
        ),
        Case::new(
            "ingress and egress in one policy",
            policy(
                "both",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: c}}\n",
            ),
            vec![(TCP80, |from, to| {
                (!to.is("x/a") || from.is("x/b")) && (!from.is("x/a") || to.is("y/c"))
            })],
        ),
        Case::new(
            "an egress deny on the client wins over an ingress allow on the server",
            policy(
                "x-a-no-egress",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n",
            ) + &policy(
                "y-b-from-x-a",
                "y",
                "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: a}}\n",
            ),
            vec![(TCP80, |from, to| !from.is("x/a") && (!to.is("y/b") || from.is("x/a")))],
        ),
        Case::new(
            "egress to one address block only",
            policy(
                "to-y-b",
                "x",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {yb}/32}}\n"
                ),
            ),
            vec![(TCP80, |from, to| !from.is("x/a") || to.is("y/b"))],
        ),
        Case::new(
            "an address in one block's except and in another policy's block is allowed",
            policy(
                "all-but-y-b",
                "x",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [{yb}/32]}}\n"
                ),
            ) + &policy(
                "to-y-b",
                "x",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {yb}/32}}\n"
                ),
            ),
            vec![(TCP80, |_, _| true), (UDP81, |_, _| true)],
        ),
        Case {
            name: "ingress from a pod once it is relabelled",
            yaml: policy(
                "from-trusted",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {role: trusted}}\n",
            ),
            checks: vec![(TCP80, |_, to| !to.is("x/a"))],
            then: Some(Then {
                yaml: pod_yaml(&c.lab, "y", "c", "role: trusted"),
                undo: pod_yaml(&c.lab, "y", "c", ""),
                checks: vec![
                    (TCP80, |from, to| !to.is("x/a") || from.is("y/c")),
                    (UDP80, |from, to| !to.is("x/a") || from.is("y/c")),
                ],
            }),
        },
        Case {
            name: "ingress from a namespace once it is relabelled",
            yaml: policy(
                "from-blue",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n",
            ),
            checks: vec![(TCP80, |_, to| !to.is("x/a"))],
            then: Some(Then {
                yaml: namespace_yaml(&c.lab, "z", "team: blue"),
                undo: namespace_yaml(&c.lab, "z", ""),
                checks: vec![(TCP80, |from, to| !to.is("x/a") || from.ns == "z")],
            }),
        },
        Case {
            name: "a pod relabelled into a policy's selection is isolated",
            yaml: policy(
                "isolate-locked",
                "x",
                "  podSelector: {matchLabels: {locked: \"yes\"}}\n  policyTypes: [Ingress]\n",
            ),
            checks: vec![(TCP80, |_, _| true)],
            then: Some(Then {
                yaml: pod_yaml(&c.lab, "x", "b", "locked: \"yes\""),
                undo: pod_yaml(&c.lab, "x", "b", ""),
                checks: vec![(TCP80, |_, to| !to.is("x/b"))],
            }),
        },
        Case {
            name: "an updated policy is enforced as updated",
            yaml: policy(
                "moving-port",
                "x",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 81, protocol: TCP}\n",
            ),
            checks: vec![(TCP80, |_, to| !to.is("x/a")), (TCP81, |_, _| true)],
            then: Some(Then {
                yaml: policy(
                    "moving-port",
                    "x",
                    "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {port: 80, protocol: TCP}\n",
                ),
                undo: String::new(),
                checks: vec![(TCP80, |_, _| true), (TCP81, |_, to| !to.is("x/a"))],
            }),
        },
    ]
}

/// Runs every case; returns what went wrong.
fn truth_tables(c: &Cluster) -> Vec<String> {
    let mut failures = Vec::new();
    let mut judge = |name: &str, checks: &[(Check, Truth)]| {
        for (check, truth) in checks {
            let wrong = mismatches(c, *check, *truth);
            if !wrong.is_empty() {
                failures.push(format!(
                    "{name} ({:?} {} {:?}):\n  {}",
                    check.proto,
                    check.port,
                    check.family,
                    wrong.join("\n  ")
                ));
            }
        }
    };
    for (i, case) in cases(c).into_iter().enumerate() {
        let t0 = Instant::now();
        let file = c.policy_file(&format!("case{i}"), &case.yaml);
        c.apply(&file);
        judge(case.name, &case.checks);
        if let Some(then) = &case.then {
            let change = c.policy_file(&format!("case{i}-then"), &then.yaml);
            c.apply(&change);
            judge(&format!("{}, after the update", case.name), &then.checks);
            if !then.undo.is_empty() {
                let undo = c.policy_file(&format!("case{i}-undo"), &then.undo);
                c.apply(&undo);
            }
        }
        c.delete(&file);
        eprintln!("case {:?}: {:?}", case.name, t0.elapsed());
    }
    // Deleted policies stop being enforced: everyone reaches everyone again.
    judge(
        "after every case's policies were deleted",
        &[(TCP80, |_, _| true), (UDP80, |_, _| true)],
    );
    failures
}

/// A TCP connection that echoes a byte every 20 ms from a thread,
/// recording when each echo came back.
struct Chatter {
    echoes: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Chatter {
    fn start(from: &Pod, to: &Pod) -> Chatter {
        let addr = SocketAddr::new(to.v4, 80);
        let mut s = in_netns(&from.netns, || {
            TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        })
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.id(), to.id()));
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let echoes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, st) = (echoes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while !st.load(Ordering::Relaxed) {
                if s.write_all(b"c").is_err() {
                    break;
                }
                if let Ok(n) = s.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    e.lock().unwrap().push(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Chatter {
            echoes,
            stop,
            thread: Some(thread),
        }
    }

    fn echoes(&self) -> Vec<Instant> {
        self.echoes.lock().unwrap().clone()
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection that a policy change denies stops at once; one that stays
/// allowed keeps flowing.
fn deny_stops_established(c: &Cluster) -> Vec<String> {
    let mut failures = Vec::new();
    let denied = Chatter::start(c.pod("x/b"), c.pod("x/a"));
    let kept = Chatter::start(c.pod("y/b"), c.pod("x/a"));
    std::thread::sleep(Duration::from_millis(300));
    if denied.echoes().is_empty() || kept.echoes().is_empty() {
        failures.push("the connections did not flow before the change".into());
    }
    let file = c.policy_file(
        "only-y",
        &policy(
            "only-y",
            "x",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
        ),
    );
    let start = Instant::now();
    c.apply(&file);
    let applied = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let last = denied.echoes().last().copied();
    match last {
        Some(t) if t > start + Duration::from_secs(1) => failures.push(format!(
            "the denied connection still flowed {:?} after lab apply started",
            t - start
        )),
        _ => {}
    }
    eprintln!(
        "deny: lab apply took {:?}; the last echo of the denied connection came {} the apply returned",
        applied - start,
        match last {
            Some(t) if t > applied => format!("{:?} after", t - applied),
            Some(t) => format!("{:?} before", applied - t),
            None => "never:".into(),
        }
    );
    let after: Vec<Instant> = kept.echoes().into_iter().filter(|t| *t > applied).collect();
    let mut gaps = after.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
    gaps.sort();
    if after.len() < 20 || gaps.last().is_some_and(|g| *g > Duration::from_millis(500)) {
        failures.push(format!(
            "the allowed connection did not keep flowing: {} echoes in 1.5 s, longest gap {:?}",
            after.len(),
            gaps.last()
        ));
    }
    drop((denied, kept));
    c.delete(&file);
    failures
}

/// Sequence-numbered UDP: `seq`, send time.
fn datagram(seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8..].copy_from_slice(&now_ns().to_be_bytes());
    b
}

fn parse_datagram(b: &[u8]) -> Option<(u64, u64)> {
    (b.len() >= 16).then(|| {
        (
            u64::from_be_bytes(b[..8].try_into().unwrap()),
            u64::from_be_bytes(b[8..16].try_into().unwrap()),
        )
    })
}

/// What a stream's receiving end saw: seq → (send time, receive time).
type Seen = Arc<Mutex<BTreeMap<u64, (u64, u64)>>>;

/// Sends a datagram every `period` from `from` to `to` until `stop`;
/// returns the send times by seq. `echo_seen` records echoes coming back.
fn stream(
    from: &Pod,
    to: SocketAddr,
    period: Duration,
    stop: Arc<AtomicBool>,
    echo_seen: Seen,
) -> std::thread::JoinHandle<BTreeMap<u64, u64>> {
    let sock = in_netns(&from.netns, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    let rx = sock.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop_rx = stop.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        loop {
            match rx.recv_from(&mut b) {
                Ok((n, _)) => {
                    if let Some((seq, sent)) = parse_datagram(&b[..n]) {
                        echo_seen.lock().unwrap().insert(seq, (sent, now_ns()));
                    }
                }
                Err(_) if stop_rx.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
    });
    std::thread::spawn(move || {
        let mut sent = BTreeMap::new();
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            let d = datagram(seq);
            if sock.send_to(&d, to).is_ok() {
                sent.insert(seq, u64::from_be_bytes(d[8..].try_into().unwrap()));
            }
            seq += 1;
            std::thread::sleep(period);
        }
        sent
    })
}

/// Records every datagram arriving on `port` in `netns`.
fn recorder(netns: &str, port: u16, seen: Seen) {
    let sock = in_netns(netns, || {
        UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))
    })
    .unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while let Ok((n, _)) = sock.recv_from(&mut b) {
            if let Some((seq, sent)) = parse_datagram(&b[..n]) {
                seen.lock().unwrap().insert(seq, (sent, now_ns()));
            }
        }
    });
}

/// 100 updates of one policy under traffic. Stream A (x/b → x/a:80,
/// echoed) is allowed by every version: no datagram may be lost, either
/// way. Stream B (y/c → x/a:82) is allowed by even versions only: a
/// datagram that crossed the dataplane while one version was surely in
/// force (sent after its `lab apply` returned, received before the next
/// one started) must have arrived if that version allows it and must not
/// have if it denies it.
fn burst_of_updates(c: &Cluster) -> Vec<String> {
    const UPDATES: usize = 100;
    const PERIOD: Duration = Duration::from_millis(2);
    /// Time a datagram may need to cross (sent this long before the next
    /// update, it is expected under the current version).
    const TRANSIT: Duration = Duration::from_millis(50);
    let version = |i: usize| {
        let mut spec = String::from(
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    ports:\n    - {port: 80, protocol: UDP}\n",
        );
        if i.is_multiple_of(2) {
            spec += "  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: c}}\n    ports:\n    - {port: 82, protocol: UDP}\n";
        }
        // Every version differs from the last in more than the second
        // rule: a label the rules do not use changes the object.
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: burst\n  namespace: NS-x\n  labels: {{version: v{i}}}\nspec:\n{spec}---\n"
        )
    };
    let xa = c.pod("x/a");
    let b_seen: Seen = Arc::default();
    recorder(&xa.netns, 82, b_seen.clone());
    let file0 = c.policy_file("burst", &version(0));
    let mut windows = Vec::with_capacity(UPDATES + 1);
    let t = now_ns();
    c.apply(&file0);
    windows.push((t, now_ns()));
    let stop = Arc::new(AtomicBool::new(false));
    let a_echo: Seen = Arc::default();
    let a = stream(
        c.pod("x/b"),
        SocketAddr::new(xa.v4, 80),
        PERIOD,
        stop.clone(),
        a_echo.clone(),
    );
    let b = stream(
        c.pod("y/c"),
        SocketAddr::new(xa.v4, 82),
        PERIOD,
        stop.clone(),
        Arc::default(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let burst_start = Instant::now();
    for i in 1..=UPDATES {
        let file = c.policy_file("burst", &version(i));
        let start = now_ns();
        c.apply(&file);
        windows.push((start, now_ns()));
        std::thread::sleep(Duration::from_millis(30));
    }
    let burst = burst_start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let end = now_ns();
    stop.store(true, Ordering::Relaxed);
    let a_sent = a.join().unwrap();
    let b_sent = b.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.delete(&file0);

    let mut failures = Vec::new();
    let margin = TRANSIT.as_nanos() as u64;
    // Stream A: everything sent early enough came back.
    let a_echo = a_echo.lock().unwrap();
    let lost: Vec<u64> = a_sent
        .iter()
        .filter(|(_, &sent)| sent + margin < end)
        .filter(|(seq, _)| !a_echo.contains_key(seq))
        .map(|(seq, _)| *seq)
        .collect();
    if !lost.is_empty() {
        failures.push(format!(
            "always-allowed stream lost {} of {} datagrams (first seqs {:?})",
            lost.len(),
            a_sent.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    // Stream B, judged per version.
    let b_seen = b_seen.lock().unwrap();
    let (mut judged, mut leaked, mut dropped) = (0, Vec::new(), Vec::new());
    for (i, w) in windows.iter().enumerate() {
        let from = w.1;
        let until = windows.get(i + 1).map_or(end, |n| n.0);
        let allowed = i.is_multiple_of(2);
        for (&seq, &sent) in b_sent.range(..) {
            if sent <= from || sent >= until {
                continue;
            }
            match b_seen.get(&seq) {
                Some(&(_, received)) if received < until => {
                    judged += 1;
                    if !allowed {
                        leaked.push((i, seq));
                    }
                }
                Some(_) => {}
                None if allowed && sent + margin < until => {
                    judged += 1;
                    dropped.push((i, seq));
                }
                None => judged += u32::from(!allowed),
            }
        }
    }
    if !leaked.is_empty() {
        failures.push(format!(
            "{} datagrams passed while the policy in force denied them: (version, seq) {:?}",
            leaked.len(),
            &leaked[..leaked.len().min(10)]
        ));
    }
    if !dropped.is_empty() {
        failures.push(format!(
            "{} datagrams were dropped while the policy in force allowed them: (version, seq) {:?}",
            dropped.len(),
            &dropped[..dropped.len().min(10)]
        ));
    }
    if judged < 500 {
        failures.push(format!(
            "only {judged} datagrams fell inside a version's window"
        ));
    }
    eprintln!(
        "burst: {UPDATES} updates in {burst:?}; stream A {} sent, {} echoed; stream B {} sent, {} received, {judged} judged",
        a_sent.len(),
        a_echo.len(),
        b_sent.len(),
        b_seen.len()
    );
    failures
}

/// `caracalctl show counters|flows|policy` against the lab's dataplane.
fn observability(c: &Cluster) -> Vec<String> {
    let show = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_caracalctl"))
            .arg("--socket")
            .arg(c.lab.state.join("dataplane.sock"))
            .arg("show")
            .args(args)
            .output()
            .expect("run caracalctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut failures = Vec::new();
    let (ok, counters) = show(&["counters"]);
    if !ok || !counters.contains("denied by policy") {
        failures.push(format!("show counters lacks the policy drops:\n{counters}"));
    }
    let (ok, flows) = show(&["flows", "--json"]);
    let burst_rule = format!("knp.{}.burst/ingress/", c.lab.ns("x"));
    if !ok || !flows.contains(&burst_rule) || !flows.contains("\"deny\"") {
        failures.push(format!(
            "show flows lacks verdicts by rule {burst_rule}: {}",
            &flows[..flows.len().min(2000)]
        ));
    }
    let pod = format!("{}/a", c.lab.ns("x"));
    let (ok, policy) = show(&["policy", &pod]);
    if !ok {
        failures.push(format!("show policy {pod} failed: {policy}"));
    }
    failures
}

#[test]
fn network_policies_end_to_end() {
    if !privileged() {
        return;
    }
    let t0 = Instant::now();
    let c = Cluster::up();
    eprintln!("lab up: {:?}", t0.elapsed());
    // Before any policy, everyone reaches everyone.
    let mut failures = mismatches(&c, TCP80, |_, _| true);
    failures.extend(mismatches(&c, SCTP81, |_, _| true));
    failures.extend(truth_tables(&c));
    failures.extend(deny_stops_established(&c));
    failures.extend(burst_of_updates(&c));
    failures.extend(observability(&c));
    eprintln!("total: {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        c.lab.logs()
    );
}
