//! The reverse-proxy recipes of `docs/reverse-proxy.md`, run as written:
//! each tested block is read out of the doc between its `e2e:NAME` markers,
//! and only the certificate paths, log paths, listen addresses and upstream
//! ports are replaced. nginx, Caddy, HAProxy and Apache come from Debian's
//! packages (`.ci/run` installs them).
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Ports of one deployment behind a proxy.
#[derive(Clone, Copy)]
pub struct Upstreams {
    pub synapse: u16,
    pub mxmedia: u16,
}

/// A recipe made ready to run: the command, and where it listens and logs.
pub struct Recipe {
    pub name: &'static str,
    pub command: Command,
    pub port: u16,
    pub federation: u16,
    /// The access log the recipe writes, if it keeps one.
    pub access_log: Option<PathBuf>,
    /// The certificate (for `mxmedia selfcheck --ca-file`).
    pub cert: PathBuf,
}

pub const PROXIES: [&str; 4] = ["nginx", "caddy", "haproxy", "apache"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The code fence between `<!-- e2e:NAME:start -->` and its end marker.
pub fn block(name: &str) -> String {
    let doc = std::fs::read_to_string(root().join("docs/reverse-proxy.md")).unwrap();
    let inner = doc
        .split(&format!("<!-- e2e:{name}:start -->"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- e2e:{name}:end -->")).next())
        .unwrap_or_else(|| panic!("docs/reverse-proxy.md marks its tested {name} block"));
    let inner = inner.trim();
    let start = inner.find('\n').expect("a code fence");
    inner[start + 1..]
        .strip_suffix("```")
        .expect("the tested block is one code fence")
        .to_owned()
}

fn replace_all(mut text: String, pairs: &[(&str, String)], what: &str) -> String {
    for (from, to) in pairs {
        assert!(
            text.contains(from),
            "the documented {what} block has `{from}`"
        );
        text = text.replace(from, to);
    }
    text
}

/// The binary of `name`, if installed.
pub fn binary(name: &str) -> Option<PathBuf> {
    let candidates: &[&str] = match name {
        "nginx" => &["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"],
        "caddy" => &["/usr/bin/caddy", "/usr/local/bin/caddy"],
        "haproxy" => &["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"],
        "apache" => &["/usr/sbin/apache2", "/usr/sbin/httpd"],
        _ => &[],
    };
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A certificate for 127.0.0.1 and matrix.example.org signed by a CA of
/// the test's own (returned, for `--ca-file`), and a file with both
/// certificate and key (HAProxy's form).
pub fn certificate(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:matrix.example.org\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mxmedia e2e CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=matrix.example.org",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let both = std::fs::read_to_string(dir.join("cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("key.pem")).unwrap();
    std::fs::write(dir.join("both.pem"), both).unwrap();
    dir.join("ca.pem")
}

/// nginx before 1.25.1 (Debian 12 has 1.22) knows only the older form of
/// `http2 on;`: the `http2` flag on `listen`.
fn nginx_http2(site: String, nginx: &Path) -> String {
    let out = Command::new(nginx).arg("-v").output().unwrap();
    let version = String::from_utf8_lossy(&out.stderr);
    let numbers: Vec<u32> = version
        .trim()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    if numbers.as_slice() >= [1, 25, 1].as_slice() {
        return site;
    }
    site.replace("\n    http2 on;", "")
        .replace(" ssl;\n", " ssl http2;\n")
}

/// Writes the config of proxy `name` under `dir` (which it owns) for
/// `up`, on fresh ports.
pub fn recipe(
    name: &'static str,
    dir: &Path,
    up: Upstreams,
    port: u16,
    federation: u16,
) -> Option<Recipe> {
    let bin = binary(name)?;
    std::fs::create_dir_all(dir).unwrap();
    let cert = certificate(dir);
    let d = dir.display().to_string();
    let upstream = [
        ("127.0.0.1:8008", format!("127.0.0.1:{}", up.synapse)),
        ("127.0.0.1:8009", format!("127.0.0.1:{}", up.mxmedia)),
    ];
    let letsencrypt = [
        (
            "/etc/letsencrypt/live/matrix.example.org/fullchain.pem",
            format!("{d}/cert.pem"),
        ),
        (
            "/etc/letsencrypt/live/matrix.example.org/privkey.pem",
            format!("{d}/key.pem"),
        ),
    ];
    let (command, access_log) = match name {
        "nginx" => {
            let mut site = replace_all(
                block("nginx"),
                &[
                    ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                    (
                        "/var/log/nginx/matrix.access.log",
                        format!("{d}/access.log"),
                    ),
                ],
                "nginx",
            );
            site = replace_all(site, &letsencrypt, "nginx");
            site = replace_all(site, &upstream, "nginx");
            let mut fed = replace_all(
                block("nginx-federation"),
                &[(
                    "listen 8448 ssl;",
                    format!("listen 127.0.0.1:{federation} ssl;"),
                )],
                "nginx federation",
            );
            fed = replace_all(fed, &letsencrypt, "nginx federation");
            fed = replace_all(fed, &upstream, "nginx federation");
            let site = nginx_http2(site + "\n" + &fed, &bin);
            std::fs::write(dir.join("site.conf"), site).unwrap();
            std::fs::create_dir_all(dir.join("tmp")).unwrap();
            let main = format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  access_log off;\n  include {d}/site.conf;\n}}\n"
            );
            std::fs::write(dir.join("nginx.conf"), main).unwrap();
            let mut command = Command::new(&bin);
            command
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .args(["-g", "daemon off;"]);
            (command, Some(dir.join("access.log")))
        }
        "caddy" => {
            let tls = format!("\n    tls {d}/cert.pem {d}/key.pem");
            let mut site = replace_all(
                block("caddy"),
                &[
                    (
                        "matrix.example.org {",
                        format!("https://127.0.0.1:{port} {{{tls}"),
                    ),
                    (
                        "matrix.example.org:8448 {",
                        format!("https://127.0.0.1:{federation} {{{tls}"),
                    ),
                    (
                        "    log {",
                        format!("    log {{\n        output file {d}/access.log"),
                    ),
                ],
                "caddy",
            );
            site = replace_all(site, &upstream, "caddy");
            // Global options: no admin endpoint, no redirect listener on :80,
            // no certificate authority of its own.
            let global = format!(
                "{{\n    admin off\n    auto_https disable_redirects\n    skip_install_trust\n    storage file_system {{\n        root {d}/data\n    }}\n}}\n"
            );
            std::fs::write(dir.join("Caddyfile"), global + &site).unwrap();
            let mut command = Command::new(&bin);
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(dir.join("Caddyfile"))
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"));
            (command, Some(dir.join("access.log")))
        }
        "haproxy" => {
            let mut config = replace_all(
                block("haproxy"),
                &[
                    (
                        "bind :443 ssl crt /etc/haproxy/certs/matrix.example.org.pem",
                        format!("bind 127.0.0.1:{port} ssl crt {d}/both.pem"),
                    ),
                    (
                        "bind :8448 ssl crt /etc/haproxy/certs/matrix.example.org.pem",
                        format!("bind 127.0.0.1:{federation} ssl crt {d}/both.pem"),
                    ),
                ],
                "haproxy",
            );
            config = replace_all(config, &upstream, "haproxy");
            let global = format!("global\n    pidfile {d}/haproxy.pid\n\n");
            std::fs::write(dir.join("haproxy.cfg"), global + &config).unwrap();
            let mut command = Command::new(&bin);
            command.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
            (command, None)
        }
        "apache" => {
            let mut site = replace_all(
                block("apache"),
                &[
                    (
                        "<VirtualHost *:443>",
                        format!("<VirtualHost 127.0.0.1:{port}>"),
                    ),
                    (
                        "<VirtualHost *:8448>",
                        format!("<VirtualHost 127.0.0.1:{federation}>"),
                    ),
                    (
                        "/var/log/apache2/matrix.access.log",
                        format!("{d}/access.log"),
                    ),
                ],
                "apache",
            );
            site = replace_all(site, &letsencrypt, "apache");
            site = replace_all(site, &upstream, "apache");
            let modules = [
                ("mpm_event", "mod_mpm_event"),
                ("authz_core", "mod_authz_core"),
                ("authz_host", "mod_authz_host"),
                ("unixd", "mod_unixd"),
                ("log_config", "mod_log_config"),
                ("headers", "mod_headers"),
                ("socache_shmcb", "mod_socache_shmcb"),
                ("ssl", "mod_ssl"),
                ("proxy", "mod_proxy"),
                ("proxy_http", "mod_proxy_http"),
            ];
            let mut main = format!(
                "ServerRoot {d}\nServerName 127.0.0.1\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\nLogLevel warn\nMutex file:{d}\nListen 127.0.0.1:{port}\nListen 127.0.0.1:{federation}\n"
            );
            for (module, file) in modules {
                // Built into the binary on some systems.
                let path = format!("/usr/lib/apache2/modules/{file}.so");
                if Path::new(&path).exists() {
                    main.push_str(&format!("LoadModule {module}_module {path}\n"));
                }
            }
            main.push_str("User www-data\nGroup www-data\n");
            main.push_str(&site);
            std::fs::write(dir.join("httpd.conf"), main).unwrap();
            let mut command = Command::new(&bin);
            command
                .arg("-f")
                .arg(dir.join("httpd.conf"))
                .arg("-DFOREGROUND");
            (command, Some(dir.join("access.log")))
        }
        other => panic!("no recipe for {other}"),
    };
    Some(Recipe {
        name,
        command,
        port,
        federation,
        access_log,
        cert,
    })
}
