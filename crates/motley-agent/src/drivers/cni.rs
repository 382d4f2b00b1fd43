//! `network: bridge` for containers: a network namespace per allocation
//! (`/run/netns/motley-<alloc>`), attached to the node's `motley0` bridge by the
//! standard CNI plugins (Debian's `containernetworking-plugins`: `loopback`, `bridge`
//! with `host-local` addresses in 10.89.0.0/16 and masquerading, `portmap` for the
//! task's ports), run as the CNI specification says: config on stdin, `CNI_*` in the
//! environment, result on stdout.

use std::path::PathBuf;

use motley_core::model::{HostPort, Protocol};
use serde_json::{Value, json};

/// Where the plugins are looked for (Debian's, then the upstream default).
pub const PLUGIN_DIRS: &[&str] = &["/usr/lib/cni", "/opt/cni/bin"];

/// The subnet containers get addresses in.
pub const SUBNET: &str = "10.89.0.0/16";

fn netns_name(id: &str) -> String {
    format!("motley-{id}")
}

/// The namespace's path, for the OCI spec.
pub fn netns_path(id: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns_name(id))
}

fn plugin_path() -> Result<String, String> {
    let found: Vec<&str> = PLUGIN_DIRS
        .iter()
        .copied()
        .filter(|d| std::path::Path::new(d).join("bridge").exists())
        .collect();
    if found.is_empty() {
        return Err(format!(
            "network: bridge needs the CNI plugins (bridge, host-local, portmap, loopback) in {}: apt install containernetworking-plugins",
            PLUGIN_DIRS.join(" or ")
        ));
    }
    Ok(found.join(":"))
}

fn bridge_conf() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "motley", "type": "bridge", "bridge": "motley0",
        "isGateway": true, "ipMasq": true, "hairpinMode": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/motley/cni-ipam"}
    })
}

fn portmap_conf(ports: &[HostPort], prev: Option<&Value>) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({"hostPort": p.port, "containerPort": p.container_port.unwrap_or(p.port),
                   "protocol": if p.protocol == Protocol::Udp { "udp" } else { "tcp" }})
        })
        .collect();
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "motley", "type": "portmap",
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings}
    });
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

async fn plugin(
    kind: &str,
    command: &str,
    id: &str,
    ifname: &str,
    conf: &Value,
) -> Result<Value, String> {
    use tokio::io::AsyncWriteExt;
    let path = plugin_path()?;
    let program = path
        .split(':')
        .map(|d| std::path::Path::new(d).join(kind))
        .find(|p| p.exists())
        .ok_or_else(|| format!("CNI plugin {kind} not found in {path}"))?;
    let mut child = tokio::process::Command::new(&program)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns_path(id))
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("CNI plugin {kind}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = serde_json::to_vec(conf).map_err(|e| e.to_string())?;
        stdin
            .write_all(&bytes)
            .await
            .map_err(|e| format!("CNI plugin {kind}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("CNI plugin {kind}: {e}"))?;
    if !out.status.success() {
        let msg = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["msg"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(format!("CNI plugin {kind} {command}: {msg}"));
    }
    if out.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("CNI plugin {kind}: {e}"))
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes the allocation's namespace and attaches it; returns its address.
pub async fn add(id: &str, ports: &[HostPort]) -> Result<String, String> {
    del(id).await;
    ip(&["netns", "add", &netns_name(id)]).await?;
    let attached = async {
        plugin(
            "loopback",
            "ADD",
            id,
            "lo",
            &json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}),
        )
        .await?;
        let result = plugin("bridge", "ADD", id, "eth0", &bridge_conf()).await?;
        if !ports.is_empty() {
            plugin(
                "portmap",
                "ADD",
                id,
                "eth0",
                &portmap_conf(ports, Some(&result)),
            )
            .await?;
        }
        result["ips"][0]["address"]
            .as_str()
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .ok_or_else(|| format!("CNI bridge gave no address: {result}"))
    }
    .await;
    if attached.is_err() {
        del(id).await;
    } else {
        // The node's proxy and DNS serve inside it too.
        // The ports the container listens on are its own in its namespace.
        let own = ports
            .iter()
            .map(|p| p.container_port.unwrap_or(p.port))
            .collect();
        motley_mesh::netns::attach(&netns_path(id), own);
    }
    attached
}

/// Detaches and removes the allocation's namespace (what is already gone is skipped;
/// `portmap` finds its rules by the container id).
pub async fn del(id: &str) {
    motley_mesh::netns::detach(&netns_path(id));
    if !netns_path(id).exists() {
        return;
    }
    // portmap 1.1 deletes nothing when the configuration maps no port (its rules and
    // the jump to them stayed, and sent a later process's loopback connections to a
    // port of the same number into the dead container: "No route to host", seen in
    // the tests). Its chains are found by network and container id, whatever the
    // ports: any one mapping makes it delete them all.
    let any = HostPort {
        name: "any".into(),
        port: 1,
        protocol: Protocol::Tcp,
        container_port: None,
    };
    let _ = plugin("portmap", "DEL", id, "eth0", &portmap_conf(&[any], None)).await;
    let _ = plugin("bridge", "DEL", id, "eth0", &bridge_conf()).await;
    let _ = ip(&["netns", "del", &netns_name(id)]).await;
}
