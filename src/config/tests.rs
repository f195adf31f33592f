use super::*;

fn shipped() -> &'static str {
    include_str!("../../config/cluster.toml")
}

#[test]
fn the_shipped_config_is_valid_and_describes_the_dev_cluster() {
    let config = Config::parse(shipped()).expect("config/cluster.toml must be valid");
    let dev = Config::dev(3, 7001, Path::new("data"));
    let listens = |c: &Config| c.nodes.iter().map(|n| n.listen.clone()).collect::<Vec<_>>();
    assert_eq!(listens(&config), listens(&dev));
    let dirs = |c: &Config| {
        c.nodes
            .iter()
            .map(|n| n.data_dir.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(dirs(&config), dirs(&dev));
    // The example's secret is the one a node beyond loopback refuses.
    assert_eq!(config.security.peer_secret.as_deref(), Some(EXAMPLE_SECRET));
    let beyond: SocketAddr = "10.0.0.1:7001".parse().expect("addr");
    let secret = config.security.secret().expect("secret");
    assert!(
        config
            .security
            .check_exposure(beyond, secret.as_deref())
            .is_err()
    );
}

fn error_key(text: &str) -> String {
    match Config::parse(text) {
        Err(Error::Config { key, message }) => format!("{key}: {message}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn bad_configs_name_the_key() {
    let base = shipped();
    assert!(error_key(&base.replace("n = 3", "n = 4")).starts_with("cluster.n"));
    assert!(error_key(&base.replace("n = 3", "n = 65")).starts_with("cluster.n"));
    assert!(error_key(&base.replace("r = 2", "r = 0")).starts_with("cluster.r"));
    // Primaries and durable acknowledgements count among r and w.
    let pr = base.replace("pr = 0", "pr = 3");
    assert!(
        error_key(&pr).starts_with("cluster.pr"),
        "{}",
        error_key(&pr)
    );
    assert!(error_key(&base.replace("dw = 0", "dw = 3")).starts_with("cluster.dw"));
    assert!(error_key(&base.replace("127.0.0.1:7002", "localhost")).starts_with("nodes[1].listen"));
    assert!(
        error_key(&base.replace("\"data/n3\"", "\"data/n1\"")).starts_with("nodes[2].data_dir")
    );
    assert!(
        error_key(&base.replace("sync = \"always\"", "sync = \"sometimes\"")).contains("sometimes")
    );
    assert!(
        error_key(&base.replace("row_cache_mb = 32", "row_cache_mb = 2000000"))
            .starts_with("storage.row_cache_mb")
    );
    let unknown = error_key(&format!("{base}\n[cluster2]\nx = 1\n"));
    assert!(unknown.contains("cluster2"), "{unknown}");
    let typo = error_key(&base.replace("max_key_bytes", "max_key_byte"));
    assert!(typo.contains("max_key_byte"), "{typo}");
    let threads = |t: &str| {
        base.replacen(
            "weight = 1",
            &format!("weight = 1\nworker_threads = {t}"),
            1,
        )
    };
    assert!(error_key(&threads("0")).starts_with("nodes[0].worker_threads"));
    assert!(error_key(&threads("1025")).starts_with("nodes[0].worker_threads"));
    let one = Config::parse(&threads("1")).expect("worker_threads = 1");
    assert_eq!(one.nodes[0].worker_threads, Some(1));
    // [security.tls] needs all three files (they are read at start).
    let tls = format!("{base}\n[security.tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\n");
    let parsed = Config::parse(&tls).expect("a full [security.tls]");
    assert_eq!(
        parsed.security.tls.map(|t| t.ca),
        Some(std::path::PathBuf::from("a"))
    );
    let no_ca = tls.replace("ca = \"a\"\n", "");
    assert!(error_key(&no_ca).contains("ca"), "{}", error_key(&no_ca));
}

#[test]
fn tls_is_what_lets_a_node_beyond_loopback_serve_without_allow_plaintext() {
    let beyond: SocketAddr = "10.0.0.1:7001".parse().expect("addr");
    let secret = [7u8; 32];
    let mut security = SecurityConfig::default();
    let error = security
        .check_exposure(beyond, Some(&secret))
        .expect_err("plain HTTP beyond loopback")
        .to_string();
    assert!(error.contains("security.tls"), "{error}");
    security.tls = Some(TlsConfig {
        cert: "node.crt".into(),
        key: "node.key".into(),
        ca: "ca.pem".into(),
    });
    assert!(security.check_exposure(beyond, Some(&secret)).is_ok());
    // TLS does not stand in for the peer secret.
    assert!(security.check_exposure(beyond, None).is_err());
}
