//! The binaries as a user runs them: configuration errors, curl straight at the
//! server with good and bad client certificates, the agent refusing a server
//! with the wrong name, certificate generation and local mode.

mod common;

use common::*;
use fluidity::certs::{Ca, Validity};

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    lines[0]
}

#[tokio::test]
async fn config_errors_are_one_line_with_exit_code_2() {
    let pki = Pki::new();
    let yaml = pki.path("bad.yaml");
    std::fs::write(&yaml, "listen: [unclosed\n").unwrap();
    let (code, _, stderr) = run_bin("fluidity-agent", &["--config", yaml.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("bad.yaml") && stderr.contains("invalid YAML"), "{stderr}");

    std::fs::write(&yaml, "server: 127.0.0.1:8443\nlisten_port: 9\n").unwrap();
    let (code, _, stderr) = run_bin("fluidity-agent", &["--config", yaml.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("listen_port"), "{stderr}");

    let missing = pki.path("nowhere/client.crt");
    let (code, _, stderr) =
        run_bin("fluidity-agent", &["--server", "127.0.0.1:1", "--cert", missing.to_str().unwrap()], &[]).await;
    assert_eq!(code, Some(2));
    let line = one_line(&stderr);
    assert!(
        line.contains("tls.cert") && line.contains(missing.to_str().unwrap()) && line.contains("not found"),
        "{line}"
    );

    // The server key with the client certificate: a mismatch, named.
    let (code, _, stderr) = run_bin(
        "fluidity-server",
        &[
            "--cert",
            pki.path("client.crt").to_str().unwrap(),
            "--key",
            pki.path("server.key").to_str().unwrap(),
            "--ca",
            pki.path("ca.crt").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(2));
    let line = one_line(&stderr);
    assert!(line.contains("tls.key") && line.contains("does not match"), "{line}");

    let (code, _, stderr) = run_bin("fluidity-server", &["--dial-timeout", "soon"], &[]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("dial_timeout"), "{stderr}");

    let (code, _, stderr) =
        run_bin("fluidity-agent", &[], &[("FLUIDITY_POOL_SIZE", "0"), ("FLUIDITY_SERVER", "h")]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("pool_size"), "{stderr}");
}

#[tokio::test]
async fn yaml_env_and_flag_precedence() {
    let pki = Pki::new();
    let yaml = pki.path("agent.yaml");
    // The file says pool_size 3 and a server; env says pool_size 70 (invalid), flag says 1.
    std::fs::write(&yaml, "server: 127.0.0.1:9\npool_size: 3\n").unwrap();
    let args = ["--config", yaml.to_str().unwrap()];
    let env = [("FLUIDITY_POOL_SIZE", "70")];
    let (code, _, stderr) = run_bin("fluidity-agent", &args, &env).await;
    assert_eq!(code, Some(2), "env must override the file: {stderr}");
    assert!(stderr.contains("pool_size") && stderr.contains("70"), "{stderr}");
    let mut with_flag = args.to_vec();
    with_flag.extend(["--pool-size", "99"]);
    let (_, _, stderr) = run_bin("fluidity-agent", &with_flag, &env).await;
    assert!(stderr.contains("99"), "the flag must override env: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_straight_at_the_server_and_bad_client_certificates() {
    let pki = Pki::new();
    let (server, addr) = server_process(&pki, "server").await;
    let origin = http_origin().await;
    let proxy = format!("https://127.0.0.1:{}", addr.port());
    let url = format!("http://{origin}/direct");
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().unwrap();
    let good = |cert: &str, key: &str| {
        vec![
            "--proxy-cert".to_string(),
            pki.path(cert).display().to_string(),
            "--proxy-key".into(),
            pki.path(key).display().to_string(),
        ]
    };

    let mut args = vec!["--proxy".to_string(), proxy.clone(), "--proxy-cacert".into(), ca.into()];
    args.extend(good("client.crt", "client.key"));
    args.push(url.clone());
    let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!((out.code, out.text().as_str()), (Some(0), "GET /direct"), "{}", out.stderr);
    server.wait_for("client=test-agent").await;

    // No client certificate.
    let out = curl(&["--proxy", &proxy, "--proxy-cacert", ca, &url]).await;
    assert_ne!(out.code, Some(0));
    server.wait_for("client presented no certificate").await;

    // A client certificate from another CA.
    let stranger = Ca::new("Stranger CA", Validity::days(1)).unwrap();
    pki.write_pair("stranger", &stranger.issue_client("intruder", Validity::days(1)).unwrap());
    let mut args = vec!["--proxy".to_string(), proxy.clone(), "--proxy-cacert".into(), ca.into()];
    args.extend(good("stranger.crt", "stranger.key"));
    args.push(url.clone());
    let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_ne!(out.code, Some(0));
    server.wait_for("UnknownIssuer").await;

    // An expired client certificate from our CA.
    pki.write_pair("expired", &pki.ca.issue_client("old-laptop", Validity::expired()).unwrap());
    let mut args = vec!["--proxy".to_string(), proxy.clone(), "--proxy-cacert".into(), ca.into()];
    args.extend(good("expired.crt", "expired.key"));
    args.push(url.clone());
    let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_ne!(out.code, Some(0));
    server.wait_for("Expired").await;

    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_server_without_expected_name() {
    let pki = Pki::new();
    let wrong = pki.ca.issue_server(&["someone-else".into()], Validity::days(1)).unwrap();
    pki.write_pair("wrong", &wrong);
    let (server, addr) = server_process(&pki, "wrong").await;
    let (cert, key, ca) = (pki.path("client.crt"), pki.path("client.key"), pki.path("ca.crt"));
    let (code, _, stderr) = run_bin(
        "fluidity-agent",
        &[
            "--listen",
            "127.0.0.1:0",
            "--server",
            &addr.to_string(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ],
        &[("RUST_LOG", "error")],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = one_line(&stderr);
    assert!(line.contains("not valid for the name fluidity-server"), "{line}");
    drop(server);
}

#[tokio::test]
async fn certs_command_writes_private_keys_and_refuses_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    let target = target.to_str().unwrap();
    let (code, stdout, stderr) =
        run_bin("fluidity-certs", &["--dir", target, "--san", "203.0.113.9,tunnel.example"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.matches("wrote ").count(), 5);
    use std::os::unix::fs::PermissionsExt;
    for key in ["server.key", "client.key"] {
        let mode = std::fs::metadata(dir.path().join("out").join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let before = std::fs::read(dir.path().join("out/ca.crt")).unwrap();
    let (code, _, stderr) = run_bin("fluidity-certs", &["--dir", target], &[]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("out/ca.crt")).unwrap(), before);
}

#[tokio::test]
async fn local_mode_check_round_trips() {
    let (code, stdout, stderr) = run_bin("fluidity-local", &["--listen", "127.0.0.1:0", "--check"], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("curl -x http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("check ok: hello through fluidity"), "{stdout}");
}

/// Configuration a service can live with: relative paths in a YAML file are
/// the file's (a service runs with `/` as its working directory), `localhost`
/// is a listen address, a quoted number or a misspelt key is named with its
/// fix, `--log-level` is checked, and the server refuses a client
/// certificate as its own identity instead of failing every handshake.
#[tokio::test]
async fn configuration_a_service_can_live_with() {
    let pki = Pki::new();
    let conf = pki.path("conf");
    std::fs::create_dir_all(conf.join("certs")).unwrap();
    for file in ["client.crt", "client.key", "ca.crt"] {
        std::fs::rename(pki.path(file), conf.join("certs").join(file)).unwrap();
    }
    // No tls section: the default certs/ is the file's too; and one explicit relative path.
    std::fs::write(conf.join("agent.yaml"), "server: 127.0.0.1:9\nlisten: localhost:0\n").unwrap();
    std::fs::write(conf.join("explicit.yaml"), "server: 127.0.0.1:9\ntls:\n  ca: certs/ca.crt\n").unwrap();
    let elsewhere = pki.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for yaml in ["../conf/agent.yaml", "../conf/explicit.yaml"] {
        let out = std::process::Command::new(bin_path("fluidity-agent"))
            .args(["--config", yaml, "--check"])
            .current_dir(&elsewhere)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // The configuration is good: the check fails only at the (closed) server port.
        assert_eq!(out.status.code(), Some(1), "{yaml}: {stdout}{stderr}");
        assert!(stderr.contains("cannot reach the Fluidity server at 127.0.0.1:9"), "{yaml}: {stderr}");
        if yaml.ends_with("agent.yaml") {
            assert!(stdout.contains("listens on 127.0.0.1:0"), "localhost: {stdout}");
        }
    }

    let yaml = pki.path("mistakes.yaml");
    let agent = |text: &str| {
        std::fs::write(&yaml, text).unwrap();
        let args = ["--config", yaml.to_str().unwrap()];
        async move { run_bin("fluidity-agent", &args, &[]).await }
    };
    let (code, _, stderr) = agent("server: 127.0.0.1:9\npool_size: \"4\"\n").await;
    assert_eq!(code, Some(2));
    let line = one_line(&stderr);
    assert!(line.contains("`pool_size`: \"4\" is quoted text where a number is expected"), "{line}");
    assert!(line.contains("write it without quotes: pool_size: 4"), "{line}");
    let (code, _, stderr) = agent("server: 127.0.0.1:9\npoolsize: 4\n").await;
    assert_eq!(code, Some(2));
    let line = one_line(&stderr);
    assert!(line.contains("`poolsize`: not a setting") && line.contains("did you mean `pool_size`?"), "{line}");

    let (code, _, stderr) = run_bin("fluidity-agent", &["--server", "127.0.0.1:9", "--log-level", "loud"], &[]).await;
    assert_eq!(code, Some(2));
    assert!(one_line(&stderr).contains("`--log-level`: `loud` is not a level"), "{stderr}");

    let server_args = |cert: &str, key: &str| {
        let path = |f: &str| pki.path(f).to_str().unwrap().to_owned();
        let ca = conf.join("certs/ca.crt").to_str().unwrap().to_owned();
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--cert".into(),
            path(cert),
            "--key".into(),
            path(key),
            "--ca".into(),
            ca,
        ]
    };
    let client = fluidity::certs::Ca::issue_client(&pki.ca, "not-a-server", Validity::days(1)).unwrap();
    pki.write_pair("wrong", &client);
    let args = server_args("wrong.crt", "wrong.key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = run_bin("fluidity-server", &args, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    let line = one_line(&stderr);
    assert!(line.contains("`tls.cert`") && line.contains("is a client certificate"), "{line}");
    assert!(line.contains("use the server.crt written by fluidity-certs"), "{line}");
}

/// `fluidity-agent service install|status|uninstall` into a temporary home:
/// a systemd user unit that `systemd-analyze verify` accepts (and a broken
/// copy it refuses), a launchd property list with the keys launchd needs,
/// the exact commands printed where no user service manager answers, and a
/// private key others can read refused.
#[tokio::test]
async fn the_agent_installs_as_a_login_service() {
    let pki = Pki::new();
    let home = tempfile::tempdir().unwrap();
    let yaml = pki.path("agent.yaml");
    std::fs::write(&yaml, "server: 127.0.0.1:9\ntls:\n  cert: client.crt\n  key: client.key\n  ca: ca.crt\n").unwrap();
    let home_str = home.path().to_str().unwrap();
    // No session bus: systemctl --user cannot reach a manager, here or on a desktop.
    let env =
        [("HOME", home_str), ("XDG_RUNTIME_DIR", home_str), ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent")];
    let service = |args: &[&str]| {
        let mut all = vec!["service"];
        all.extend(args);
        all.extend(["--config", yaml.to_str().unwrap()]);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_bin("fluidity-agent", &all, &env).await
        }
    };

    let (code, stdout, stderr) = service(&["install"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let unit = home.path().join(".config/systemd/user/fluidity-agent.service");
    assert!(stdout.contains(&format!("wrote {}", unit.display())), "{stdout}");
    assert!(stdout.contains("  systemctl --user enable --now fluidity-agent.service"), "{stdout}");
    let text = std::fs::read_to_string(&unit).unwrap();
    let config = std::fs::canonicalize(&yaml).unwrap();
    assert!(text.contains(&format!("--config {}", config.display())), "an absolute configuration path: {text}");
    let verify = |path: &std::path::Path| {
        std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(path).output().unwrap()
    };
    let verified = verify(&unit);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let broken = home.path().join("broken.service");
    std::fs::write(&broken, text.replace("ExecStart=/", "ExecStart=relative/")).unwrap();
    assert!(!verify(&broken).status.success(), "systemd-analyze verify refuses a broken unit");

    let (code, stdout, _) = service(&["status"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with(&format!("installed: {}", unit.display())), "{stdout}");
    let (code, stdout, _) = service(&["uninstall"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&format!("removed {}", unit.display())) && !unit.exists(), "{stdout}");
    let (_, stdout, _) = service(&["status"]).await;
    assert!(stdout.starts_with("not installed"), "{stdout}");

    let (code, stdout, stderr) = service(&["install", "--manager", "launchd"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let plist = home.path().join("Library/LaunchAgents/dev.fluidity.agent.plist");
    assert!(stdout.contains("launchctl bootstrap gui/"), "{stdout}");
    let script = "import plistlib, sys, json; d = plistlib.load(open(sys.argv[1], 'rb')); print(json.dumps(d))";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&plist).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["Label"], "dev.fluidity.agent");
    assert_eq!(parsed["ProgramArguments"][1], "--config");
    assert_eq!(parsed["ProgramArguments"][2], config.to_str().unwrap());
    assert_eq!((&parsed["RunAtLoad"], &parsed["KeepAlive"]), (&serde_json::json!(true), &serde_json::json!(true)));
    assert!(parsed["StandardErrorPath"].as_str().unwrap().starts_with(home_str), "{parsed}");

    // A key others can read: refused, nothing written.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pki.path("client.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::remove_file(&unit).ok();
    let (code, _, stderr) = service(&["install"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("readable by other users") && stderr.contains("chmod 600"), "{stderr}");
    assert!(!unit.exists());
}
