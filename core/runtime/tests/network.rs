//! The box's network on real VMs, every packet staying on this machine: servers on the host's
//! 127.0.0.1 reached through `host.docker.internal`, a DNS server of the test's own as the
//! upstream, a published port, no network at all, and an egress allow-list.

mod common;

use boxlite::{BoxOptions, ExecCommand, Network, PortSpec, Protocol, RegistryConfig, Runtime, RuntimeOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Every name under this test domain resolves to the host alias (the host's 127.0.0.1 as the
/// box sees it), so nothing the box resolves is ever contacted off this machine.
const TEST_DOMAIN: &str = "boxlite-test";
const HOST_ALIAS: [u8; 4] = [192, 168, 127, 254];

/// A DNS server on 127.0.0.1 answering A queries under [`TEST_DOMAIN`]; NXDOMAIN for the rest.
fn dns_server() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let Some(reply) = dns_reply(&buf[..n]) {
                let _ = sock.send_to(&reply, from);
            }
        }
    });
    port
}

fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    // Header (12 bytes), then one question: labels, type, class.
    let mut i = 12;
    let mut labels = Vec::new();
    while *q.get(i)? != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let ours = labels.last().map(String::as_str) == Some(TEST_DOMAIN);
    let answer = ours && qtype == 1;
    let mut r = q[..2].to_vec(); // id
    r.extend_from_slice(&[0x81, if ours { 0x80 } else { 0x83 }]); // response, RA, NOERROR/NXDOMAIN
    r.extend_from_slice(&[0, 1, 0, answer as u8, 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..question_end)?);
    if answer {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        r.extend_from_slice(&HOST_ALIAS);
    }
    Some(r)
}

/// An HTTP server on 127.0.0.1 answering every request with `body`.
fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut req = [0u8; 4096];
                let _ = stream.read(&mut req);
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
    port
}

/// A UDP server on 127.0.0.1 that sends every datagram back upper-cased.
fn udp_echo() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n].to_ascii_uppercase(), from);
        }
    });
    port
}

fn runtime_with_dns(dns_port: u16) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("bxn").tempdir_in("/tmp").unwrap();
    let registries = vec![RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions {
        home: Some(dir.path().into()),
        registries,
        dns_servers: vec![format!("127.0.0.1:{dns_port}")],
        ..Default::default()
    })
    .unwrap();
    (rt, dir)
}

/// Runs a Python snippet in the box; its stdout, or a panic with its stderr.
async fn python(b: &boxlite::LiteBox, code: &str) -> (i32, String, String) {
    let out = b.exec(ExecCommand::new("python3", ["-c", code])).await.unwrap().output().await.unwrap();
    (out.status.exit_code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Python that GETs `/` from HOST:PORT over a plain socket (the slim image has no `http`
/// package) and prints the body.
fn fetch(host: &str, port: u16) -> String {
    format!(
        "import socket; s = socket.create_connection(('{host}', {port}), timeout=10); \
         s.sendall(b'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'); data = b''\n\
         while True:\n  chunk = s.recv(4096)\n  if not chunk: break\n  data += chunk\n\
         print(data.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')"
    )
}

/// Python that serves HTTP on PORT in the box, answering every request with /etc/hostname.
fn serve(port: u16) -> String {
    format!(
        "import socket; l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         l.bind(('0.0.0.0', {port})); l.listen(8); body = open('/etc/hostname', 'rb').read()\n\
         while True:\n  c, _ = l.accept(); c.recv(4096); \
         c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(body) + body); c.close()"
    )
}

/// A plain HTTP GET of `/` on 127.0.0.1:`port` from the host: the response, once the server answers.
fn host_get(port: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(s, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp)
        });
        match attempt {
            Ok(resp) if !resp.is_empty() => return resp,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("port {port} never answered: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_box_reaches_the_host_resolves_names_and_serves_a_published_port() {
    let (rt, _home) = runtime_with_dns(dns_server());
    let (web, echo) = (http_server("hello from the host"), udp_echo());
    let options = BoxOptions { ports: vec![PortSpec::tcp(0, 8000)], ..BoxOptions::new("python:slim") };
    let b = rt.create(options).await.unwrap();

    // The host's servers through both aliases.
    for alias in ["host.docker.internal", "host.boxlite.internal"] {
        let (code, out, err) = python(&b, &fetch(alias, web)).await;
        assert_eq!((code, out.as_str()), (0, "hello from the host"), "{alias}: {err}");
    }
    let udp = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10); \
         s.sendto(b'ping', ('host.docker.internal', {echo})); print(s.recv(100).decode(), end='')"
    );
    assert_eq!(python(&b, &udp).await.1, "PING");
    // A name only the test's DNS server knows: the box's queries go to the configured upstream.
    let (_, out, err) = python(&b, &format!("import socket; print(socket.gethostbyname('svc.{TEST_DOMAIN}'), end='')")).await;
    assert_eq!(out, "192.168.127.254", "{err}");
    // The box's identity files, served by the agent, not written into the image.
    let (_, out, _) = python(&b, "print(open('/etc/resolv.conf').read(), open('/etc/hostname').read(), end='')").await;
    assert!(out.contains("nameserver 192.168.127.1") && out.contains(b.id()), "{out}");

    // A server in the box on a published port (host port 0: one picked, and reported).
    let server = b.exec(ExecCommand::new("python3", ["-c".to_string(), serve(8000)])).await.unwrap();
    let ports = b.info().unwrap().ports;
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert!(ports[0].host_port != 0 && ports[0].guest_port == 8000 && ports[0].protocol == Protocol::Tcp, "{ports:?}");
    let resp = host_get(ports[0].host_port, Duration::from_secs(30));
    assert!(resp.starts_with("HTTP/1.0 200") && resp.contains(b.id()), "{resp}");
    server.control().kill().await.unwrap();

    let m = b.metrics().await.unwrap();
    assert!(m.network_bytes_sent > 0 && m.network_bytes_received > 0 && m.network_tcp_connections >= 3, "{m:?}");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_port_in_use_fails_the_create_and_the_start_naming_the_port() {
    let (rt, _home) = runtime_with_dns(dns_server());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let t = Instant::now();
    let err = rt.create(BoxOptions { ports: vec![PortSpec::tcp(port, 80)], ..BoxOptions::new("busybox:latest") }).await.err().expect("port in use");
    assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}/tcp")), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(rt.list().unwrap().is_empty(), "a box was left");
    // Free at create, taken by the time the box starts: the start fails, naming it.
    drop(taken);
    let b = rt.create(BoxOptions { ports: vec![PortSpec::tcp(port, 80)], ..BoxOptions::new("busybox:latest") }).await.unwrap();
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let t = Instant::now();
    let err = b.start().await.err().expect("the start must fail");
    assert!(err.to_string().contains(&format!("{port}")) && err.to_string().contains("in use"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(b.info().unwrap().status, boxlite::BoxStatus::Failed);
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_means_no_nic_and_connects_fail_at_once() {
    let (rt, _home) = runtime_with_dns(dns_server());
    let web = http_server("unreachable");
    let b = rt.create(BoxOptions { network: Network::None, ..BoxOptions::new("busybox:latest") }).await.unwrap();
    let out = b.exec(ExecCommand::new("ls", ["/sys/class/net"])).await.unwrap().output().await.unwrap();
    let nics = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(nics.split_whitespace().collect::<Vec<_>>(), ["lo"], "{nics}");
    let t = Instant::now();
    // nc, not busybox's static wget: that one crashes in a rootfs without glibc's NSS modules.
    let out = b.exec(ExecCommand::new("nc", ["192.168.127.254", &web.to_string()])).await.unwrap().output().await.unwrap();
    assert_eq!(out.status.exit_code(), 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(5), "the connect hung for {:?}", t.elapsed());
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allow_list_admits_its_names_refuses_the_rest_at_once_and_can_be_replaced() {
    let (rt, _home) = runtime_with_dns(dns_server());
    let web = http_server("allowed");
    let allowed = format!("allowed.{TEST_DOMAIN}");
    let network = Network::Allow(vec![allowed.clone()]);
    let b = rt.create(BoxOptions { network, ..BoxOptions::new("python:slim") }).await.unwrap();
    let connect = |host: &str| {
        format!(
            "import socket, time; t = time.time()\ntry:\n  socket.create_connection(('{host}', {web}), timeout=10); print('connected', end='')\n\
             except OSError as e:\n  print(type(e).__name__, round(time.time() - t, 1), end='')"
        )
    };
    // An address that no allowed name resolved to: refused at once, not dropped.
    let (_, out, err) = python(&b, &connect("192.168.127.254")).await;
    assert!(out.starts_with("ConnectionRefusedError") || out.starts_with("ConnectionResetError"), "{out} {err}");
    let secs: f64 = out.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs < 1.0, "refused after {secs} s");
    // A name that is not allowed does not resolve.
    let (_, out, err) = python(&b, &format!("import socket\ntry:\n  print(socket.gethostbyname('denied.{TEST_DOMAIN}'))\nexcept OSError as e:\n  print('unresolved')")).await;
    assert_eq!(out.trim(), "unresolved", "{err}");
    // The allowed name resolves, and its address is then reachable.
    let (code, out, err) = python(&b, &fetch(&allowed, web)).await;
    assert_eq!((code, out.as_str()), (0, "allowed"), "{err}");
    // Replaced on the running box: everything is allowed.
    b.set_network(Network::Enabled).await.unwrap();
    let (_, out, err) = python(&b, &format!("import socket; print(socket.gethostbyname('denied.{TEST_DOMAIN}'), end='')")).await;
    assert_eq!(out, "192.168.127.254", "{err}");
    assert_eq!(b.info().unwrap().options.network, Network::Enabled, "the new policy is kept for later starts");
    let err = b.set_network(Network::Allow(vec!["http://x".into()])).await.err().expect("bad entry");
    assert_eq!(err.code(), "INVALID_ARGUMENT");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_network_options_name_the_entry() {
    let (rt, _home) = runtime_with_dns(dns_server());
    for (options, needle) in [
        (BoxOptions { network: Network::Allow(vec!["pypi.org".into(), "*".into()]), ..BoxOptions::new("busybox:latest") }, "'*'"),
        (BoxOptions { ports: vec![PortSpec::tcp(8080, 0)], ..BoxOptions::new("busybox:latest") }, "guest port"),
        (BoxOptions { ports: vec![PortSpec::tcp(18080, 80), PortSpec::tcp(18080, 81)], ..BoxOptions::new("busybox:latest") }, "twice"),
    ] {
        let err = rt.create(options).await.err().expect("must be refused");
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(rt.list().unwrap().is_empty());
}
