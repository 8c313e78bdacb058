//! The egress allowlist enforced in a real guest (S7), probed against services the test runs
//! on the host's loopback, which slirp's gateway `10.0.2.2` reaches. Every "blocked" is told
//! apart from "nothing listening": the same kind of service answers on an allowed path in the
//! same run, and the blocked one is checked to answer from the host. DNS (S7.2): under an
//! allowlist the provided resolver does not answer and names other than the pinned ones do
//! not resolve; with open egress, in the same run, the same query is answered.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use ccvm_plugin_api::{AllowRule, SetupStep};

use crate::boot;
use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// A TCP service on 127.0.0.1 that answers `open` to every connection.
fn tcp_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    serve(listener)
}

fn serve(listener: TcpListener) -> u16 {
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"open\n");
        }
    });
    port
}

fn answers_from_the_host(port: u16) -> bool {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text == "open\n"
}

/// A "resolver" on the host's port 53 (UDP and TCP), standing in for one the agent might try
/// instead of the one ccvm provides. Bound once per test process and lent to one test at a
/// time. Needs root and a free port 53; `None` (with the reason printed) otherwise, and the DNS
/// probe is left out.
fn fake_resolver() -> Option<MutexGuard<'static, UdpSocket>> {
    static RESOLVER: OnceLock<Option<Mutex<UdpSocket>>> = OnceLock::new();
    let resolver = RESOLVER.get_or_init(|| {
        let bound = UdpSocket::bind("127.0.0.1:53")
            .and_then(|udp| TcpListener::bind("127.0.0.1:53").map(|tcp| (udp, tcp)));
        match bound {
            Ok((udp, tcp)) => {
                serve(tcp);
                udp.set_read_timeout(Some(Duration::from_millis(500)))
                    .expect("timeout");
                Some(Mutex::new(udp))
            }
            Err(e) => {
                eprintln!(
                    "skipping the DNS-to-another-resolver probe: cannot bind 127.0.0.1:53 \
                     ({e}); it needs root and a free port 53"
                );
                None
            }
        }
    });
    let guard = resolver
        .as_ref()?
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Whatever an earlier test sent is not this test's.
    guard.set_nonblocking(true).expect("nonblocking");
    while guard.recv_from(&mut [0u8; 512]).is_ok() {}
    guard.set_nonblocking(false).expect("blocking");
    Some(guard)
}

/// A DNS query (id 0x1234, `deb.debian.org` A), as a bash `printf` format.
const DNS_QUERY: &str =
    r"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03deb\x06debian\x03org\x00\x00\x01\x00\x01";

const PROBES: &str = r#"
probe() { r=$(timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2 && head -c4 <&3" 2>/dev/null); echo "probe $1:$2=${r:-blocked}"; }
for target in $PROBE_TARGETS; do probe ${target%:*} ${target#*:}; done
echo datagram > /dev/udp/10.0.2.2/$UDP_PORT 2>/dev/null; echo "udp sent"
dns() { r=$(timeout 5 bash -c "exec 3<>/dev/udp/$1/53 && printf '$DNS_QUERY' >&3 && head -c2 <&3 | od -An -tx1" 2>/dev/null | tr -d ' \n'); echo "dns $1=${r:-none}"; }
dns 10.0.2.3; dns 10.0.2.2
echo "check-resolv nameservers=$(grep -c '^nameserver' /etc/resolv.conf)"
if getent hosts localhost >/dev/null; then echo "pinned=resolves"; else echo "pinned=fails"; fi
start=$(date +%s); if getent hosts deb.debian.org >/dev/null; then echo "other=resolves"; else echo "other=fails"; fi; echo "other-seconds=$(( $(date +%s) - start ))"
if nft flush ruleset 2>/dev/null; then echo "flush=done"; else echo "flush=refused"; fi
if sudo -n true 2>/dev/null; then echo "sudo=yes"; else echo "sudo=no"; fi
if echo "1.2.3.4 evil" >> /etc/hosts 2>/dev/null; then echo "hosts=written"; else echo "hosts=refused"; fi
grep -o 'Reachable over TCP: .*' "$HOME/.claude/CLAUDE.md" || echo 'no allowlist header'
"#;

/// Runs a session and returns its stdout and stderr.
fn session_out(world: &World, targets: &str, udp_port: u16) -> (String, String) {
    let script = format!(
        "PROBE_TARGETS='{targets}'; UDP_PORT={udp_port}; DNS_QUERY='{DNS_QUERY}'\n{PROBES}"
    );
    let out = world
        .ccvm()
        .args(["--shell", "-c", &script])
        .run_within(Duration::from_secs(240));
    assert_eq!(
        out.code, 0,
        "stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    (out.stdout.replace('\r', ""), out.stderr)
}

fn session(world: &World, targets: &str, udp_port: u16) -> String {
    session_out(world, targets, udp_port).0
}

#[test]
fn allowlisted_port_answers_everything_else_is_blocked_and_the_agent_cannot_lift_it() {
    let (allowed, other) = (tcp_service(), tcp_service());
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let udp_port = udp.local_addr().expect("addr").port();
    let config =
        format!("[egress]\nallowlist = [\"localhost\", \"10.0.2.2\"]\nports = [{allowed}]\n");
    let Some(world) = vm::stub_world(&config, |_| {}) else {
        return;
    };
    let resolver = fake_resolver();

    let out = session(
        &world,
        &format!("10.0.2.2:{allowed} 10.0.2.2:{other} 10.0.2.2:53"),
        udp_port,
    );
    assert!(
        out.contains(&format!("probe 10.0.2.2:{allowed}=open")),
        "{out}"
    );
    assert!(
        out.contains(&format!("probe 10.0.2.2:{other}=blocked")),
        "{out}"
    );
    assert!(
        answers_from_the_host(other),
        "the blocked service does answer from the host"
    );
    let mut buffer = [0u8; 64];
    assert!(
        udp.recv_from(&mut buffer).is_err(),
        "a UDP datagram left the guest"
    );
    // S7.2: no DNS at all, not even to the resolver the network provides (with open egress
    // it answers: `without_an_allowlist_the_same_datagram_reaches_the_host`); the pinned
    // names resolve from /etc/hosts, others fail at once instead of hanging.
    assert!(out.contains("dns 10.0.2.3=none"), "{out}");
    assert!(out.contains("dns 10.0.2.2=none"), "{out}");
    assert!(out.contains("check-resolv nameservers=0"), "{out}");
    assert!(out.contains("pinned=resolves"), "{out}");
    assert!(out.contains("other=fails"), "{out}");
    assert!(
        out.contains("other-seconds=0") || out.contains("other-seconds=1"),
        "a lookup fails at once: {out}"
    );
    assert!(
        out.contains("There is no DNS in this VM: only "),
        "the header says so: {out}"
    );
    if let Some(resolver) = resolver {
        assert!(
            resolver.recv_from(&mut buffer).is_err(),
            "a DNS query reached a resolver ccvm did not provide"
        );
        assert!(out.contains("probe 10.0.2.2:53=blocked"), "{out}");
        assert!(answers_from_the_host(53), "the TCP resolver answers");
    }
    assert!(out.contains("flush=refused"), "{out}");
    assert!(
        out.contains("sudo=no"),
        "an allowlist drops the agent's root: {out}"
    );
    assert!(out.contains("hosts=refused"), "{out}");
    assert!(
        out.contains("Reachable over TCP: 10.0.2.2 (ports "),
        "{out}"
    );
}

#[test]
fn the_host_gateway_is_blocked_unless_listed() {
    let service = tcp_service();
    let config = format!("[egress]\nallowlist = [\"localhost\"]\nports = [{service}]\n");
    let Some(world) = vm::stub_world(&config, |_| {}) else {
        return;
    };
    let out = session(&world, &format!("10.0.2.2:{service}"), 9);
    assert!(
        out.contains(&format!("probe 10.0.2.2:{service}=blocked")),
        "{out}"
    );
    assert!(
        answers_from_the_host(service),
        "the service answers from the host"
    );
    assert!(
        !out.contains("10.0.2.2 (ports"),
        "the header must not list it: {out}"
    );
}

#[test]
fn an_allowlist_that_resolves_to_nothing_is_refused_before_boot() {
    let Some(world) = vm::stub_world("[egress]\nallowlist = [\"no-such-host.invalid\"]\n", |_| {})
    else {
        return;
    };
    let out = world
        .ccvm()
        .args(["--shell", "-c", "true"])
        .run_within(Duration::from_secs(60));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("none of the egress allowlist's names resolved"),
        "{}",
        out.stderr
    );
    assert!(
        !world.path("runtime/ccvm").exists(),
        "nothing may be started"
    );
}

/// S7.2: an allowlist of addresses only boots although no name needs to resolve (on a host
/// where `api.anthropic.com` does not resolve it says the API is out of reach), and an entry
/// that covers the host gateway is warned about at launch. The listed address answers.
#[test]
fn an_address_only_allowlist_boots_and_the_gateway_entry_is_warned_about() {
    let service = tcp_service();
    let config = format!("[egress]\nallowlist = [\"10.0.2.0/24\"]\nports = [{service}]\n");
    let Some(world) = vm::stub_world(&config, |_| {}) else {
        return;
    };
    let (out, stderr) = session_out(&world, &format!("10.0.2.2:{service}"), 9);
    assert!(
        out.contains(&format!("probe 10.0.2.2:{service}=open")),
        "{out}"
    );
    assert!(
        stderr.contains("ccvm: warning: egress allowlist entry `10.0.2.0/24` covers 10.0.2.2"),
        "{stderr}"
    );
    let api_resolves = std::net::ToSocketAddrs::to_socket_addrs(&("api.anthropic.com", 443))
        .is_ok_and(|mut a| a.next().is_some());
    if !api_resolves {
        assert!(
            stderr.contains("`api.anthropic.com` did not resolve on the host, so claude cannot"),
            "{stderr}"
        );
        assert!(out.contains("No name resolves in this VM"), "{out}");
    }
    assert!(out.contains("check-resolv nameservers=0"), "{out}");
}

/// The control for the UDP and DNS probes above: with open egress the same datagram does
/// reach the host and the provided resolver answers the same query, so "nothing received"
/// there means blocked, not "slirp drops UDP anyway" or "the resolver is down".
#[test]
fn without_an_allowlist_the_same_datagram_reaches_the_host() {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    udp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let udp_port = udp.local_addr().expect("addr").port();
    let Some(world) = vm::stub_world("", |_| {}) else {
        return;
    };
    let resolver = fake_resolver();
    let out = session(&world, "", udp_port);
    assert!(out.contains("udp sent"), "{out}");
    // The positive control for "no DNS under an allowlist": the provided resolver answers
    // the same query, and resolv.conf names it.
    assert!(out.contains("dns 10.0.2.3=1234"), "{out}");
    assert!(out.contains("check-resolv nameservers=1"), "{out}");
    let mut buffer = [0u8; 64];
    let (length, _) = udp.recv_from(&mut buffer).expect("the datagram arrives");
    assert_eq!(&buffer[..length], b"datagram\n");
    if let Some(resolver) = resolver {
        let (length, _) = resolver
            .recv_from(&mut buffer)
            .expect("the DNS query reaches the other resolver");
        assert_eq!(&buffer[..2], [0x12, 0x34], "{:?}", &buffer[..length]);
    }
}

/// S7.2 fail closed: a ruleset `nft` rejects (no configuration can produce one, so the test
/// edits the seed) leaves egress closed completely, says so on the console, and the ssh
/// session still works. The service the allowlist names answers from the host, and with the
/// intact ruleset the guest reaches it (the first test above).
#[test]
fn a_filter_that_fails_to_load_closes_egress_and_says_so() {
    let service = tcp_service();
    let config =
        format!("[egress]\nallowlist = [\"localhost\", \"10.0.2.2\"]\nports = [{service}]\n");
    let Some(world) = vm::stub_world(&config, |_| {}) else {
        return;
    };
    let script = format!(
        "r=$(timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{service} && head -c4 <&3' 2>/dev/null)\n\
         echo \"check: probe=${{r:-blocked}}\"\n"
    );
    let session = boot::boot_session(&world, "microvm", &script, |manifest, _| {
        let rules = manifest
            .setup_steps
            .iter_mut()
            .find_map(|step| match step {
                SetupStep::Firewall(rules) => Some(rules),
                _ => None,
            })
            .expect("an allowlist plans a firewall step");
        rules.allow.push(AllowRule {
            destination: "300.1.2.3".into(),
            tcp_ports: vec![443],
            from_name: None,
        });
    });
    assert_eq!(session.value("probe"), "blocked", "{}", session.console);
    assert!(answers_from_the_host(service));
    assert!(
        session.console.contains("EGRESS FILTER FAILED"),
        "{}",
        session.console
    );
    assert!(
        session
            .console
            .contains("egress is closed completely instead (fail-closed)"),
        "{}",
        session.console
    );
}
