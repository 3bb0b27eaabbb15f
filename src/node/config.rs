//! The node's configuration files: containerd's, the CNI network's, the
//! kubelet's and CoreDNS's, as this kind of host needs them (cgroup v1
//! through cgroupfs, no AppArmor, no CAP_SYS_RESOURCE, no resolver of the
//! machine's).

use std::path::Path;

use serde_json::json;

/// The node's address on its bridge: the pods' gateway, where the servers
/// they reach listen, the kubelet's node IP and the pods' DNS server.
pub const NODE_IP: &str = "10.88.0.1";
/// The pods' network (host-local IPAM), which has no route out.
pub const POD_CIDR: &str = "10.88.0.0/16";
/// The bridge the CNI plugin attaches pods to.
pub const BRIDGE: &str = "cni0";
/// The Services' virtual addresses, which kube-proxy maps to pods.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The Node's name.
pub const NODE_NAME: &str = "smolpaws-node";

/// containerd 1.x's configuration: the CRI with runc under cgroupfs, the
/// node's own pause image, and its CNI network in `cni_dir`.
pub fn containerd(pause_image: &str, cni_dir: &Path) -> String {
    format!(
        r#"version = 2
# Snapshotters and exporters this node never uses.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj would fail.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # containerd 1.x does not tell the kubelet its driver; both use cgroupfs.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        cni = cni_dir.display()
    )
}

/// The pods' network: a bridge without masquerade whose only routes are the
/// pod and Service ranges, so nothing a pod sends can leave the node's
/// network namespace.
pub fn cni() -> String {
    let network = json!({
        "cniVersion": "1.0.0",
        "name": "smolpaws",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR, "gateway": NODE_IP }]],
                    "routes": [{ "dst": SERVICE_CIDR }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    serde_json::to_string_pretty(&network).expect("JSON serializes")
}

/// The kubelet's configuration, its pods' cgroups under `cgroup_root`.
pub fn kubelet(cgroup_root: &str, client_ca: &Path) -> String {
    let config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // cgroup v1 is deprecated, refused unless allowed (until 1.38).
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": format!("/{cgroup_root}"),
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        // Never the machine's resolver: cluster names only, from CoreDNS.
        "resolvConf": "",
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzPort": 0,
        // Only the apiserver, with its client certificate, may call in:
        // pods reach this address too.
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": false },
            "x509": { "clientCAFile": client_ca },
        },
        "authorization": { "mode": "AlwaysAllow" },
        "failSwapOn": false,
        // The host's disk is shared: evict for nothing but a full one.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
    });
    serde_json::to_string_pretty(&config).expect("JSON serializes")
}

/// CoreDNS's configuration: cluster names from the apiserver through
/// `kubeconfig`, nothing forwarded anywhere.
pub fn corefile(kubeconfig: &Path) -> String {
    format!(
        "cluster.local:53 in-addr.arpa:53 {{\n    errors\n    kubernetes cluster.local in-addr.arpa {{\n        kubeconfig {}\n    }}\n    cache 30\n}}\n",
        kubeconfig.display()
    )
}
