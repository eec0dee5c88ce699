//! The network through the CLI: `-p` (a server in the box fetched from the host, the port picked
//! for host port 0 shown by `boxlite port`), the host reached as host.docker.internal, NET I/O in
//! `stats`, `--network none`, `--allow-net`, and bad or busy ports refused before any box exists.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

mod common;

use common::{boxlite, text};

fn expect(home: &Path, args: &[&str], code: i32) -> Output {
    let out = boxlite(home, args).output().expect("run boxlite");
    assert_eq!(out.status.code(), Some(code), "boxlite {args:?}: stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    out
}

/// An HTTP server on the host's 127.0.0.1 answering every request with `body`.
fn host_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

/// GET / from 127.0.0.1:`port`, retried while the server in the box starts.
fn host_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        });
        match attempt {
            Ok(reply) if reply.contains("200 OK") => return reply,
            other if Instant::now() > deadline => panic!("no answer on port {port}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn bad_or_busy_ports_are_refused_before_any_box_exists() {
    let home = common::Home::new();
    let home = home.path();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let busy_spec = format!("{busy_port}:80");
    for (spec, named) in [("80", "80"), ("8080:0", "8080:0"), ("8080:80/sctp", "sctp"), ("70000:80", "70000"), (busy_spec.as_str(), busy_port.as_str())] {
        let t = Instant::now();
        let out = expect(home, &["run", "--rm", "-p", spec, "busybox:latest", "true"], 125);
        let err = text(&out.stderr);
        assert!(err.contains(named), "-p {spec}: the error does not name {named}: {err}");
        assert!(t.elapsed() < Duration::from_secs(5), "-p {spec} took {:?}", t.elapsed());
    }
    let out = expect(home, &["run", "--rm", "--allow-net", "not a host!", "busybox:latest", "true"], 125);
    assert!(text(&out.stderr).contains("not a host!"), "{}", text(&out.stderr));
    assert_eq!(text(&expect(home, &["ls"], 0).stdout).lines().count(), 1, "a refused run left a box");
}

#[test]
fn a_published_port_the_host_alias_none_and_an_allow_list() {
    let home = common::Home::new();
    let home = home.path();
    let web = host_server("from-the-host");
    // busybox's static wget crashes in a rootfs without glibc's NSS modules; nc does not.
    let get = |host: &str| format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {host} {web}");

    expect(home, &["run", "-d", "--name", "web", "-p", "0:8080", "busybox:latest"], 0);
    expect(home, &["exec", "web", "sh", "-c", "mkdir -p /www && echo served-from-the-box > /www/index.html && httpd -p 8080 -h /www"], 0);
    let ports = text(&expect(home, &["port", "web"], 0).stdout);
    let host_port: u16 = ports
        .trim()
        .strip_prefix("8080/tcp -> 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("boxlite port: {ports}"));
    assert_ne!(host_port, 0, "{ports}");
    assert!(host_get(host_port).contains("served-from-the-box"));

    let out = expect(home, &["exec", "web", "sh", "-c", &get("host.docker.internal")], 0);
    assert!(text(&out.stdout).ends_with("\r\n\r\nfrom-the-host"), "{}", text(&out.stdout));
    let stats = text(&expect(home, &["stats", "--no-stream", "web"], 0).stdout);
    assert!(stats.contains("NET I/O") && !stats.contains("0B / 0B"), "no traffic counted: {stats}");
    expect(home, &["rm", "-f", "web"], 0);
    expect(home, &["port", "web"], 125);

    let out = expect(home, &["run", "--rm", "--network", "none", "busybox:latest", "ls", "/sys/class/net"], 0);
    assert_eq!(text(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["lo"], "network none has NICs");

    // The host alias is not on the list: refused at once (a reset), not left to time out.
    let t = Instant::now();
    let out = expect(home, &["run", "--rm", "--allow-net", "192.0.2.7", "busybox:latest", "sh", "-c", &get("host.docker.internal")], 1);
    assert!(text(&out.stderr).contains("Connection refused"), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(15), "a refused connect took {:?}", t.elapsed());
    let out = expect(home, &["run", "--rm", "--allow-net", "host.docker.internal", "busybox:latest", "sh", "-c", &get("host.docker.internal")], 0);
    assert!(text(&out.stdout).ends_with("from-the-host"), "{}", text(&out.stdout));
}
