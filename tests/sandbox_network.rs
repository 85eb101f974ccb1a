//! Network confinement: Landlock per TCP port, seccomp for every other family and type.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{assert_probe, Workspace};
use std::net::TcpListener;

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

#[test]
fn no_network_by_default() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let (_l, _port) = listener();
    assert_probe(&policy, &["socket", "AF_INET", "SOCK_STREAM"], "EPERM");
    assert_probe(&policy, &["socket", "AF_INET6", "SOCK_STREAM"], "EPERM");
    assert_probe(&policy, &["socket", "AF_INET", "SOCK_DGRAM"], "EPERM");
}

#[test]
fn tcp_connect_only_to_granted_ports() {
    let ws = Workspace::new();
    let (_allowed, port) = listener();
    let (_other, other) = listener();
    let policy = ws.policy(&format!("[network]\nconnect_tcp = [{port}]\n"));
    assert_probe(&policy, &["tcp_connect", &port.to_string()], "ok");
    assert_probe(&policy, &["tcp_connect", &other.to_string()], "EACCES");
    assert_probe(&policy, &["tcp_bind", &port.to_string()], "EACCES");
}

#[test]
fn tcp_bind_only_to_granted_ports() {
    let ws = Workspace::new();
    let (l, port) = listener();
    drop(l);
    let policy = ws.policy(&format!("[network]\nbind_tcp = [{port}]\n"));
    assert_probe(&policy, &["tcp_bind", &port.to_string()], "ok");
    assert_probe(&policy, &["tcp_bind", &(port ^ 1).to_string()], "EACCES");
}

#[test]
fn non_tcp_sockets_are_refused_even_with_tcp_granted() {
    let ws = Workspace::new();
    let policy = ws.policy("[network]\nconnect_tcp = [443]\n");
    for (family, kind, proto) in [
        ("AF_INET", "SOCK_DGRAM", "0"),
        ("AF_INET6", "SOCK_DGRAM", "0"),
        ("AF_INET", "SOCK_RAW", "1"),
        ("AF_PACKET", "SOCK_RAW", "0"),
        ("AF_NETLINK", "SOCK_RAW", "0"),
        ("AF_VSOCK", "SOCK_STREAM", "0"),
        ("AF_ALG", "SOCK_SEQPACKET", "0"),
        ("AF_UNIX", "SOCK_STREAM", "0"),
        ("AF_UNIX", "SOCK_DGRAM", "0"),
        // SCTP and MPTCP are stream sockets Landlock's TCP rules do not cover.
        ("AF_INET", "SOCK_STREAM", "132"),
        ("AF_INET", "SOCK_STREAM", "262"),
    ] {
        assert_probe(&policy, &["socket", family, kind, proto], "EPERM");
    }
    assert_probe(&policy, &["socket", "AF_INET", "SOCK_STREAM", "6"], "ok");
}

#[test]
fn unix_sockets_cannot_reach_the_host() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    // No unix socket can be created, so neither pathname nor abstract addresses are reachable.
    assert_probe(&policy, &["socket", "AF_UNIX", "SOCK_STREAM"], "EPERM");
    assert_probe(&policy, &["socket", "AF_UNIX", "SOCK_SEQPACKET"], "EPERM");
    // A datagram pair could sendto() a host pathname socket: refused. A stream pair cannot.
    assert_probe(&policy, &["socketpair", "SOCK_DGRAM"], "EPERM");
    assert_probe(&policy, &["socketpair", "SOCK_STREAM"], "ok");
}
