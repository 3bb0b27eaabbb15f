//! The Helm chart (`charts/smolpaws`), with the real `helm` from `tools/` and
//! the real test control plane: it lints, renders, is accepted by the
//! apiserver, installs and upgrades, and its RBAC is exactly what the
//! operator needs. Nothing runs the Deployment's pods here (there is no
//! kubelet or controller-manager): the RBAC proof runs the operator binary
//! itself with the rendered Deployment's environment, as its ServiceAccount.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use kube::runtime::wait::await_condition;
use serde::Deserialize;
use smolpaws::api::AgentRun;
use support::fake_github::FakeGitHub;
use support::helm::{helm, helm_ok};
use support::kubelet::{Behaviour, Kubelet};
use support::operator::{Agent, app_key, stand_in_agent};
use support::webhook;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/smolpaws");
const ALL_FEATURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/chart/all-features.yaml"
);
const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/smolpaws.yaml");
/// Values for an operator watching every namespace and serving team-a too.
const CLUSTER_WIDE: [&str; 4] = [
    "--set",
    "rbac.namespaced=false",
    "--set",
    "sandboxNamespaces={team-a}",
];

/// `helm template` of the chart as `release` in `namespace`, with `extra`.
async fn render(release: &str, namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    helm_ok(&args).await
}

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// Server-side applies every document, as `kubectl apply --server-side`.
async fn apply(client: &kube::Client, docs: &[serde_json::Value]) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    for doc in docs {
        let object: DynamicObject = serde_json::from_value(doc.clone()).expect("an object");
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = kube::core::GroupVersionKind::try_from(&types).expect("a GVK");
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the apiserver serves no {gvk:?}"));
        let api: Api<DynamicObject> =
            match (&capabilities.scope, object.metadata.namespace.as_deref()) {
                (kube::discovery::Scope::Namespaced, Some(ns)) => {
                    Api::namespaced_with(client.clone(), ns, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
        let name = object.metadata.name.clone().expect("a name");
        api.patch(
            &name,
            &PatchParams::apply("smolpaws-test").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("the apiserver refused {} {name}: {e}", types.kind));
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("a namespace");
}

#[tokio::test]
async fn the_chart_lints_and_renders_with_defaults_and_every_feature() {
    helm_ok(&["lint", "--strict", CHART]).await;
    helm_ok(&["lint", "--strict", CHART, "-f", ALL_FEATURES]).await;

    let defaults = documents(&render("smolpaws", "smolpaws", &[]).await);
    assert_eq!(
        kinds(&defaults),
        [
            "Deployment",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Service",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let cluster_wide = documents(&render("smolpaws", "smolpaws", &CLUSTER_WIDE).await);
    let cluster_kinds = kinds(&cluster_wide);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert_eq!(
            cluster_kinds.iter().filter(|k| *k == kind).count(),
            1,
            "{kind} in {cluster_kinds:?}"
        );
    }
    // Cluster-wide too, the Lease is reached only through a Role in the
    // release namespace that names it (a create cannot be named).
    let mut lease_rules = 0;
    for doc in &cluster_wide {
        let rules = doc["rules"].as_array().into_iter().flatten();
        for rule in rules.filter(|r| r["resources"] == serde_json::json!(["leases"])) {
            lease_rules += 1;
            assert_eq!(doc["kind"], "Role", "leases in a {}", doc["kind"]);
            assert_eq!(doc["metadata"]["namespace"], "smolpaws");
            if rule["verbs"] != serde_json::json!(["create"]) {
                assert_eq!(
                    rule["resourceNames"],
                    serde_json::json!(["smolpaws-controller"])
                );
            }
        }
    }
    assert_eq!(lease_rules, 2, "create, and get/patch by name");
    let deployment = cluster_wide
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#"{"name":"SMOLPAWS_ALLOWED_NAMESPACES","value":"smolpaws,team-a"}"#),
        "{env}"
    );
    assert!(!env.contains("SMOLPAWS_WATCH_NAMESPACE"), "{env}");
    let everything = documents(&render("smolpaws", "smolpaws", &["-f", ALL_FEATURES]).await);
    assert_eq!(
        kinds(&everything),
        [
            "Deployment",
            "Ingress",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Secret",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let deployment = everything
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let named = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {env}"))
    };
    assert_eq!(
        named("SMOLPAWS_WATCH_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let projected: Vec<&str> =
        deployment["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|source| source["secret"]["name"].as_str())
            .collect();
    assert_eq!(
        projected,
        ["smolpaws-github", "smolpaws-llm", "smolpaws-daytona"]
    );
    assert!(
        !env.to_string().contains("sk-test"),
        "secrets reach the operator through Secrets only"
    );
    // As files: an env var is in /proc/PID/environ and every child's.
    assert!(
        !env.to_string().contains("secretKeyRef"),
        "no secret as an env var: {env:#}"
    );
    for (variable, file) in [
        ("GITHUB_WEBHOOK_SECRET_FILE", "github-webhook-secret"),
        ("GITHUB_APP_PRIVATE_KEY_FILE", "github-private-key.pem"),
        ("LLM_API_KEY_FILE", "llm-api-key"),
        ("DAYTONA_API_KEY_FILE", "daytona-api-key"),
    ] {
        assert_eq!(
            named(variable)["value"],
            format!("/etc/smolpaws/secrets/{file}")
        );
    }
}

/// What Checkov reports on `files`: its JSON, one object per framework.
async fn checkov(files: &[PathBuf]) -> serde_json::Value {
    let python = tokio::task::spawn_blocking(|| support::python::interpreter("checkov"))
        .await
        .expect("the checkov environment");
    let mut command = tokio::process::Command::new(python.with_file_name("checkov"));
    for file in files {
        command.arg("--file").arg(file);
    }
    let output = command
        // --skip-download: no call home for guidelines (there is no internet
        // here, and a scan must not depend on one).
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("checkov runs");
    // It exits 1 when a check fails; the report says which.
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov gave no report ({e}, {}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The findings Checkov is told to skip, each with the reason given beside
/// it in values.yaml; anything else it finds fails the test.
const CHECKOV_SKIPS: [&str; 3] = [
    // The operator is a Kubernetes client: it needs its token.
    "CKV_K8S_38",
    // The release tag, unless image.digest is set.
    "CKV_K8S_43",
    // IfNotPresent with an immutable tag.
    "CKV_K8S_15",
];

#[tokio::test]
async fn checkov_finds_nothing_in_the_chart_but_its_justified_skips() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let all = dir.path().join("all-features.yaml");
    std::fs::write(
        &all,
        render("smolpaws", "smolpaws", &["-f", ALL_FEATURES]).await,
    )
    .expect("writing a render");
    let cluster_wide = dir.path().join("cluster-wide.yaml");
    std::fs::write(
        &cluster_wide,
        render("smolpaws", "smolpaws", &CLUSTER_WIDE).await,
    )
    .expect("writing a render");
    let report = checkov(&[PathBuf::from(MANIFESTS), all, cluster_wide]).await;
    let results = &report["results"];
    let summary = &report["summary"];
    eprintln!("checkov {}: {summary}", summary["checkov_version"]);

    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} on {}", c["check_id"], c["check_name"], c["resource"]))
        .collect();
    assert!(failed.is_empty(), "Checkov findings: {failed:#?}");
    assert!(
        summary["passed"].as_u64().unwrap_or_default() > 100,
        "Checkov checked little: {summary}"
    );
    for skipped in results["skipped_checks"].as_array().into_iter().flatten() {
        let id = skipped["check_id"].as_str().unwrap_or_default();
        assert!(
            CHECKOV_SKIPS.contains(&id),
            "an unexpected skip: {skipped:#}"
        );
        assert!(
            skipped["resource"]
                .as_str()
                .is_some_and(|r| r.starts_with("Deployment.")),
            "skips are for the operator's Deployment: {skipped:#}"
        );
        let reason = skipped["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.len() > 40, "{id} is skipped without a reason");
    }
    // Each of the three files has the Deployment, each skip on it.
    assert_eq!(summary["skipped"], 3 * CHECKOV_SKIPS.len());
}

#[tokio::test]
async fn the_schema_rejects_wrong_values() {
    for (value, path) in [
        ("replicaCount=two", "/replicaCount"),
        ("sandbox.backend=vm", "/sandbox/backend"),
        ("limits.runTimeout=soon", "/limits/runTimeout"),
        ("allowedActors=octocat", "/allowedActors"),
        ("ingres.enabled=true", "ingres"),
        (
            "networkPolicy.githubCidrs={github.com}",
            "/networkPolicy/githubCidrs/0",
        ),
        // The open-internet list is gone; a leftover one must not be ignored.
        ("networkPolicy.httpsCidrs={0.0.0.0/0}", "httpsCidrs"),
        ("sandboxNamespaces={Team_A}", "/sandboxNamespaces/0"),
        // A tag where a digest belongs would silently pin nothing.
        ("image.digest=latest", "/image/digest"),
        (
            "admissionPolicy.allowedImages=ghcr.io/octo/ci:1",
            "/admissionPolicy/allowedImages",
        ),
    ] {
        let (ok, _, stderr) = helm(&["template", "x", CHART, "--set", value]).await;
        assert!(!ok, "{value} was accepted");
        assert!(stderr.contains(path), "{value}: {stderr}");
    }
}

/// The sandboxes' NetworkPolicies among `docs`, by namespace.
fn network_policies(docs: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    docs.iter()
        .filter(|d| {
            d["kind"] == "NetworkPolicy"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("-sandboxes"))
        })
        .map(|d| {
            let namespace = d["metadata"]["namespace"].as_str().expect("a namespace");
            (namespace.to_owned(), d.clone())
        })
        .collect()
}

fn egress_rules(policy: &serde_json::Value) -> &[serde_json::Value] {
    policy["spec"]["egress"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The `protocol/port` pairs a rule opens.
fn rule_ports(rule: &serde_json::Value) -> Vec<String> {
    rule["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["protocol"].as_str().unwrap_or("TCP"), p["port"]))
        .collect()
}

/// The one egress rule of `policy` that opens exactly `ports`.
fn rule_for<'a>(policy: &'a serde_json::Value, ports: &[&str]) -> &'a serde_json::Value {
    let rules: Vec<_> = egress_rules(policy)
        .iter()
        .filter(|rule| rule_ports(rule) == ports)
        .collect();
    assert_eq!(rules.len(), 1, "one rule for {ports:?} in {policy:#}");
    rules[0]
}

/// The ipBlocks of every egress rule, as (cidr, except).
fn ip_blocks(policy: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    egress_rules(policy)
        .iter()
        .flat_map(|rule| rule["to"].as_array().into_iter().flatten())
        .filter(|peer| peer.get("ipBlock").is_some())
        .map(|peer| {
            let block = &peer["ipBlock"];
            let except = block["except"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().expect("a CIDR").to_owned())
                .collect();
            (block["cidr"].as_str().expect("a CIDR").to_owned(), except)
        })
        .collect()
}

/// What a broad CIDR must leave out: private networks (the cluster's among
/// them), link-local (cloud metadata), CGNAT, loopback and "this network".
const INTERNAL_RANGES: [&str; 7] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "0.0.0.0/8",
];

fn ipv4_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (address, bits) = cidr.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    Some((u32::from(address), bits.parse().expect("a prefix length")))
}

/// Whether IPv4 CIDR `inner` is a strict subset of `outer`.
fn strictly_within(inner: &str, outer: &str) -> bool {
    match (ipv4_cidr(inner), ipv4_cidr(outer)) {
        (Some((inner, inner_bits)), Some((outer, outer_bits))) => {
            let mask = u32::MAX.checked_shl(32 - outer_bits).unwrap_or(0);
            inner_bits > outer_bits && inner & mask == outer & mask
        }
        _ => false,
    }
}

/// Every ipBlock that holds an internal range leaves it out, and no except
/// lies outside its CIDR (the apiserver refuses that).
fn assert_broad_cidrs_leave_out_internal_ranges(policy: &serde_json::Value) {
    for (cidr, except) in ip_blocks(policy) {
        for range in INTERNAL_RANGES {
            if strictly_within(range, &cidr) {
                assert!(except.iter().any(|e| e == range), "{cidr} keeps {range}");
            }
        }
        for excepted in &except {
            assert!(
                strictly_within(excepted, &cidr) || (excepted.contains(':') && cidr == "::/0"),
                "{cidr} excepts {excepted}, outside it"
            );
        }
    }
}

/// A rule without `to` would open its ports to every address.
fn assert_every_rule_names_its_destinations(policy: &serde_json::Value) {
    for rule in egress_rules(policy) {
        assert!(
            rule["to"].as_array().is_some_and(|to| !to.is_empty()),
            "a rule open to everywhere: {rule}"
        );
    }
}

/// GitHub's published ranges the default must hold (api.github.com/meta).
const GITHUB_RANGES: [&str; 6] = [
    "140.82.112.0/20",
    "143.55.64.0/20",
    "185.199.108.0/22",
    "192.30.252.0/22",
    "2a0a:a440::/29",
    "2606:50c0::/32",
];

#[tokio::test]
async fn sandboxes_reach_only_cluster_dns_the_operator_and_github_by_default() {
    let docs = documents(&render("paws", "agents", &[]).await);
    let policies = network_policies(&docs);
    assert_eq!(policies.keys().collect::<Vec<_>>(), ["agents"]);
    let policy = &policies["agents"];
    assert_eq!(
        policy["spec"]["podSelector"]["matchExpressions"][0],
        serde_json::json!({"key": "smolpaws.dev/run", "operator": "Exists"})
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(
        policy["spec"]["ingress"],
        serde_json::json!([]),
        "nothing reaches sandboxes"
    );
    assert_eq!(
        egress_rules(policy).len(),
        3,
        "DNS, the operator, GitHub: {policy:#}"
    );
    assert_every_rule_names_its_destinations(policy);

    let dns = rule_for(policy, &["UDP/53", "TCP/53"]);
    assert_eq!(
        dns["to"],
        serde_json::json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }])
    );

    // The operator's result port, which also serves the LLM gateway.
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let result_port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "results")
        .expect("a results port")["containerPort"]
        .clone();
    let operator = rule_for(policy, &[&format!("TCP/{result_port}")]);
    assert_eq!(
        operator["to"],
        serde_json::json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}},
            "podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
        }])
    );

    let https = rule_for(policy, &["TCP/443"]);
    let cidrs: Vec<String> = ip_blocks(policy)
        .into_iter()
        .map(|(cidr, _)| cidr)
        .collect();
    assert_eq!(
        https["to"].as_array().map(Vec::len),
        Some(cidrs.len()),
        "HTTPS goes only to ipBlocks"
    );
    for range in GITHUB_RANGES {
        assert!(cidrs.iter().any(|c| c == range), "no {range} in {cidrs:?}");
    }
    for cidr in &cidrs {
        let bits: u32 = cidr
            .rsplit_once('/')
            .and_then(|(_, bits)| bits.parse().ok())
            .expect("a prefix length");
        let narrowest = if cidr.contains(':') { 29 } else { 20 };
        assert!(bits >= narrowest, "{cidr} is wider than any GitHub range");
    }
    assert_broad_cidrs_leave_out_internal_ranges(policy);
}

#[tokio::test]
async fn broad_cidrs_leave_out_private_link_local_cgnat_loopback_and_this_network() {
    let docs = documents(
        &render(
            "paws",
            "agents",
            &[
                "--set",
                "networkPolicy.githubCidrs={0.0.0.0/0,::/0,100.0.0.0/6,140.82.112.0/20}",
            ],
        )
        .await,
    );
    let policy = &network_policies(&docs)["agents"];
    assert_broad_cidrs_leave_out_internal_ranges(policy);
    let blocks: BTreeMap<String, Vec<String>> = ip_blocks(policy).into_iter().collect();
    let mut everything = blocks["0.0.0.0/0"].clone();
    everything.sort();
    let mut internal = INTERNAL_RANGES.map(str::to_owned).to_vec();
    internal.sort();
    assert_eq!(everything, internal);
    assert_eq!(blocks["::/0"], ["fc00::/7", "fe80::/10"]);
    assert_eq!(blocks["100.0.0.0/6"], ["100.64.0.0/10"]);
    assert!(blocks["140.82.112.0/20"].is_empty());
}

#[tokio::test]
async fn the_egress_proxy_replaces_the_github_rule() {
    let docs = documents(
        &render(
            "paws",
            "agents",
            &[
                "--set",
                "networkPolicy.egressProxy.enabled=true",
                "--set",
                "networkPolicy.egressProxy.cidrs={10.96.0.0/24}",
                "--set",
                "networkPolicy.egressProxy.port=3128",
            ],
        )
        .await,
    );
    let policy = &network_policies(&docs)["agents"];
    assert_every_rule_names_its_destinations(policy);
    assert!(
        egress_rules(policy)
            .iter()
            .all(|rule| !rule_ports(rule).contains(&"TCP/443".to_owned())),
        "no HTTPS past the proxy: {policy:#}"
    );
    let proxy = rule_for(policy, &["TCP/3128"]);
    assert_eq!(
        proxy["to"],
        serde_json::json!([{"ipBlock": {"cidr": "10.96.0.0/24"}}])
    );
    assert_eq!(ip_blocks(policy).len(), 1, "only the proxy: {policy:#}");

    // Without addresses the rule would open the port everywhere.
    let (ok, _, stderr) = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "networkPolicy.egressProxy.enabled=true",
    ])
    .await;
    assert!(!ok, "a proxy without addresses was accepted");
    assert!(stderr.contains("egressProxy.cidrs"), "{stderr}");
}

#[tokio::test]
async fn every_sandbox_namespace_gets_the_network_policy() {
    let docs = documents(
        &render(
            "paws",
            "agents",
            &[
                "--set",
                "rbac.namespaced=false",
                "--set",
                "sandboxNamespaces={team-a,agents,team-b}",
            ],
        )
        .await,
    );
    let policies = network_policies(&docs);
    assert_eq!(
        policies.keys().collect::<Vec<_>>(),
        ["agents", "team-a", "team-b"]
    );
    for policy in policies.values() {
        // The operator runs in the release namespace only.
        let operator = rule_for(policy, &["TCP/8081"]);
        assert_eq!(
            operator["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "agents"
        );
        assert_eq!(policy["spec"], policies["agents"]["spec"]);
    }

    // A namespaced operator runs sandboxes nowhere else.
    let (ok, _, stderr) = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "rbac.namespaced=true",
        "--set",
        "sandboxNamespaces={team-a}",
    ])
    .await;
    assert!(!ok, "sandboxNamespaces with rbac.namespaced was accepted");
    assert!(stderr.contains("sandboxNamespaces"), "{stderr}");
}

/// The NetworkPolicy on the operator's own pods.
fn operator_policy(docs: &[serde_json::Value]) -> serde_json::Value {
    let policies: Vec<_> = docs
        .iter()
        .filter(|d| {
            d["kind"] == "NetworkPolicy"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| name.ends_with("-operator"))
        })
        .collect();
    assert_eq!(policies.len(), 1, "one operator NetworkPolicy");
    policies[0].clone()
}

/// The container port of the operator named `name`.
fn operator_port(docs: &[serde_json::Value], name: &str) -> serde_json::Value {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} port"))["containerPort"]
        .clone()
}

/// The one ingress rule of `policy` that opens exactly `ports`.
fn ingress_rule_for<'a>(policy: &'a serde_json::Value, ports: &[&str]) -> &'a serde_json::Value {
    let rules: Vec<_> = policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| rule_ports(rule) == ports)
        .collect();
    assert_eq!(
        rules.len(),
        1,
        "one ingress rule for {ports:?} in {policy:#}"
    );
    rules[0]
}

/// A peer of sandbox pods in `namespace`.
fn sandboxes_in(namespace: &str) -> serde_json::Value {
    serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchExpressions": [{"key": "smolpaws.dev/run", "operator": "Exists"}]},
    })
}

#[tokio::test]
async fn only_sandboxes_reach_the_operators_result_port_and_the_webhook_is_open() {
    let docs = documents(&render("paws", "agents", &CLUSTER_WIDE).await);
    let policy = operator_policy(&docs);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(policy["metadata"]["namespace"], "agents");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    assert_eq!(
        policy["spec"]["ingress"].as_array().map(Vec::len),
        Some(2),
        "the result port and the webhook port, nothing else: {policy:#}"
    );

    // The result endpoint, which is also the LLM gateway: sandbox pods of
    // every sandbox namespace, which their own policies let out to it.
    let results = format!("TCP/{}", operator_port(&docs, "results"));
    let rule = ingress_rule_for(&policy, &[&results]);
    assert_eq!(
        rule["from"],
        serde_json::json!([sandboxes_in("agents"), sandboxes_in("team-a")])
    );
    for sandboxes in network_policies(&docs).values() {
        let out = rule_for(sandboxes, &[&results]);
        assert_eq!(out["to"][0]["podSelector"], policy["spec"]["podSelector"]);
    }

    // GitHub must reach the webhook: open by default.
    let webhook = format!("TCP/{}", operator_port(&docs, "http"));
    let rule = ingress_rule_for(&policy, &[&webhook]);
    assert!(rule.get("from").is_none(), "the webhook is open: {rule}");

    // Or only from the ingress controller.
    let ingress_controller = serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    });
    let values = dir_with_values(&serde_json::json!({
        "networkPolicy": {"webhookFrom": [ingress_controller]}
    }));
    let docs = documents(
        &render(
            "paws",
            "agents",
            &[
                "-f",
                values.path().join("values.yaml").to_str().expect("UTF-8"),
            ],
        )
        .await,
    );
    let policy = operator_policy(&docs);
    let rule = ingress_rule_for(&policy, &[&webhook]);
    assert_eq!(rule["from"], serde_json::json!([ingress_controller]));
    let rule = ingress_rule_for(&policy, &[&results]);
    assert_eq!(rule["from"], serde_json::json!([sandboxes_in("agents")]));
}

/// A directory holding `values` as values.yaml, for `helm -f`.
fn dir_with_values(values: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(
        dir.path().join("values.yaml"),
        serde_json::to_string(values).expect("JSON is YAML"),
    )
    .expect("writing values");
    dir
}

/// The chart as `release` in namespace `namespace`, watching every
/// namespace and serving `team` too, with `extra`.
async fn render_cluster_wide(
    release: &str,
    namespace: &str,
    team: &str,
    extra: &[&str],
) -> Vec<serde_json::Value> {
    let team = format!("sandboxNamespaces={{{team}}}");
    let mut args = vec!["--set", "rbac.namespaced=false", "--set", &team];
    args.extend_from_slice(extra);
    documents(&render(release, namespace, &args).await)
}

#[tokio::test]
async fn the_network_policies_are_accepted_by_the_apiserver() {
    let client = support::client();
    let release = support::namespace(&client, "chart-netpol").await;
    let team = support::namespace(&client, "chart-netpol-team").await;
    let docs = render_cluster_wide(
        "netpol",
        &release,
        &team,
        &[
            "--set",
            "networkPolicy.githubCidrs={0.0.0.0/0,::/0,100.0.0.0/6,140.82.112.0/20}",
        ],
    )
    .await;
    let mut policies: Vec<_> = network_policies(&docs).into_values().collect();
    assert_eq!(policies.len(), 2);
    policies.push(operator_policy(&docs));
    // The excepts are strict subsets of their CIDRs, or this is refused.
    apply(&client, &policies).await;
    let operator = Api::<NetworkPolicy>::namespaced(client.clone(), &release)
        .get("netpol-smolpaws-operator")
        .await
        .expect("the operator's NetworkPolicy is stored");
    let rules = operator.spec.and_then(|s| s.ingress).unwrap_or_default();
    assert_eq!(rules[0].from.as_ref().map(Vec::len), Some(2));
    let stored = Api::<NetworkPolicy>::namespaced(client.clone(), &team)
        .get("netpol-smolpaws-sandboxes")
        .await
        .expect("the sandbox namespace's NetworkPolicy is stored");
    let rules = stored.spec.and_then(|s| s.egress).unwrap_or_default();
    assert_eq!(rules.len(), 3);
}

/// An AgentRun `name` in `namespace` for `repository`, with the
/// installation and image its creator chose.
fn chosen_run(
    namespace: &str,
    name: &str,
    repository: &str,
    installation: Option<i64>,
    image: Option<&str>,
) -> AgentRun {
    let mut spec = support::runs::issue_spec(repository, 1, "octocat");
    spec.github.installation_id = installation;
    spec.sandbox.image = image.map(str::to_owned);
    let mut run = AgentRun::new(name, spec);
    run.metadata.namespace = Some(namespace.to_owned());
    run
}

/// Creates `run`: Ok, or the apiserver's refusal.
async fn create_run(client: &kube::Client, run: &AgentRun) -> Result<(), String> {
    let namespace = run.metadata.namespace.as_deref().expect("a namespace");
    Api::<AgentRun>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), run)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

#[tokio::test]
async fn the_admission_policy_refuses_runs_the_values_do_not_allow() {
    let client = support::client();
    let release = support::namespace(&client, "chart-vap").await;
    let team = support::namespace(&client, "chart-vap-team").await;
    let unserved = support::namespace(&client, "chart-vap-other").await;
    let docs = render_cluster_wide(
        "vap",
        &release,
        &team,
        &[
            "--set",
            "allowedOwners={Octo-Org}",
            "--set",
            "allowedRepos={octo-org/hello,octo-org/world}",
            "--set",
            "allowedInstallations={42}",
            "--set",
            "admissionPolicy.allowedImages={ghcr.io/octo-org/ci:1}",
        ],
    )
    .await;
    let policy: Vec<_> = docs
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|kind| kind.starts_with("ValidatingAdmissionPolicy"))
        })
        .cloned()
        .collect();
    assert_eq!(policy.len(), 2, "the policy and its binding");
    apply(&client, &policy).await;

    // The apiserver enforces a new policy once it has compiled it.
    let evil = chosen_run(&release, "probe", "evil/repo", None, None);
    let mut wait = Duration::from_millis(100);
    let started = std::time::Instant::now();
    while create_run(&client, &evil).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the admission policy never took effect"
        );
        Api::<AgentRun>::namespaced(client.clone(), &release)
            .delete("probe", &Default::default())
            .await
            .expect("deleting the probe");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }

    for (namespace, name, repository, installation, image, refusal) in [
        (
            &release,
            "other-owner",
            "evil/hello",
            Some(42),
            None,
            Some("repository evil/hello"),
        ),
        (
            &release,
            "other-repo",
            "octo-org/secret",
            Some(42),
            None,
            Some("repository octo-org/secret"),
        ),
        (
            &release,
            "other-installation",
            "octo-org/hello",
            Some(7),
            None,
            Some("installation 7"),
        ),
        (
            &team,
            "other-image",
            "octo-org/hello",
            None,
            Some("evil.example/miner:latest"),
            Some("image evil.example/miner:latest"),
        ),
        // Names compare as GitHub's do; a run may leave the installation
        // and image to the operator, or name an allowed image.
        (&release, "good", "Octo-Org/Hello", Some(42), None, None),
        (
            &release,
            "good-default-image",
            "octo-org/world",
            None,
            Some("docker.io/library/buildpack-deps:bookworm-scm"),
            None,
        ),
        (
            &team,
            "good-image",
            "octo-org/hello",
            Some(42),
            Some("ghcr.io/octo-org/ci:1"),
            None,
        ),
        // Not this release's namespace: its controller refuses such runs.
        (
            &unserved,
            "elsewhere",
            "evil/repo",
            Some(7),
            Some("evil.example/miner:latest"),
            None,
        ),
    ] {
        let created = create_run(
            &client,
            &chosen_run(namespace, name, repository, installation, image),
        )
        .await;
        match (refusal, created) {
            (None, Ok(())) => {}
            (None, Err(error)) => panic!("{name} was refused: {error}"),
            (Some(_), Ok(())) => panic!("{name} was admitted"),
            (Some(expected), Err(error)) => {
                assert!(error.contains(expected), "{name}: {error}");
                assert!(
                    error.contains("chart value"),
                    "{name} names the value: {error}"
                );
            }
        }
    }
}

/// What `manifests/smolpaws.yaml` must hold: the namespace, the CRD and the
/// chart rendered with its defaults.
async fn expected_manifests() -> String {
    let rendered = render("smolpaws", "smolpaws", &["--include-crds"]).await;
    format!(
        "# Generated from charts/smolpaws with its default values; do not edit.\n\
         # Regenerate: SMOLPAWS_UPDATE_MANIFESTS=1 cargo test --test helm_chart manifests\n\
         # Apply: kubectl apply --server-side -f manifests/\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: smolpaws\n{rendered}"
    )
}

#[tokio::test]
async fn manifests_and_the_charts_crd_are_up_to_date() {
    let crd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/agentrun.yaml"))
        .expect("crds/agentrun.yaml");
    let charts =
        std::fs::read_to_string(format!("{CHART}/crds/agentrun.yaml")).expect("the chart's CRD");
    assert!(
        crd == charts,
        "charts/smolpaws/crds/agentrun.yaml differs from crds/agentrun.yaml: copy it"
    );

    let expected = expected_manifests().await;
    if std::env::var_os("SMOLPAWS_UPDATE_MANIFESTS").is_some() {
        std::fs::write(MANIFESTS, &expected).expect("writing the manifests");
    }
    let actual = std::fs::read_to_string(MANIFESTS).unwrap_or_default();
    assert!(
        actual == expected,
        "manifests/smolpaws.yaml is out of date: SMOLPAWS_UPDATE_MANIFESTS=1 cargo test --test helm_chart manifests"
    );
}

#[tokio::test]
async fn the_rendered_manifests_are_accepted_by_the_apiserver() {
    let client = support::client();
    let defaults = support::namespace(&client, "chart-defaults").await;
    apply(
        &client,
        &documents(&render("ssa-defaults", &defaults, &[]).await),
    )
    .await;
    // Everything but the ServiceMonitor, whose CRD belongs to the Prometheus
    // Operator and is not installed here.
    let everything = support::namespace(&client, "chart-all").await;
    let docs = render(
        "ssa-all",
        &everything,
        &[
            "-f",
            ALL_FEATURES,
            "--set",
            "metrics.serviceMonitor.enabled=false",
        ],
    )
    .await;
    apply(&client, &documents(&docs)).await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &everything)
        .get("ssa-all-smolpaws")
        .await
        .expect("the Deployment is stored");
    assert_eq!(deployment.spec.replicas, Some(3));

    // `kubectl apply --server-side -f manifests/`: the namespace, the CRD
    // (already there, identical) and the chart with its defaults.
    let manifests = std::fs::read_to_string(MANIFESTS).expect("manifests/smolpaws.yaml");
    apply(&client, &documents(&manifests)).await;
    Api::<Deployment>::namespaced(client.clone(), "smolpaws")
        .get("smolpaws")
        .await
        .expect("the plain manifests' Deployment is stored");
}

#[tokio::test]
async fn helm_installs_and_upgrades_the_chart() {
    let client = support::client();
    let ns = support::namespace(&client, "chart-install").await;
    let kubeconfig = support::kubeconfig();
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let common = [
        "--namespace",
        &ns,
        "--kubeconfig",
        kubeconfig,
        "--set",
        "rbac.namespaced=true",
    ];
    let mut install = vec!["install", "paws", CHART];
    install.extend_from_slice(&common);
    let notes = helm_ok(&install).await;
    assert!(
        notes.contains("/webhooks/github"),
        "NOTES name the webhook: {notes}"
    );
    assert!(
        notes.contains("kubectl -n"),
        "NOTES say how to watch runs: {notes}"
    );

    let mut upgrade = vec!["upgrade", "paws", CHART, "--set", "replicaCount=3"];
    upgrade.extend_from_slice(&common);
    helm_ok(&upgrade).await;
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("paws-smolpaws")
        .await
        .expect("the Deployment is installed");
    assert_eq!(deployment.spec.replicas, Some(3));
    let history = helm_ok(&[
        "history",
        "paws",
        "--namespace",
        &ns,
        "--kubeconfig",
        kubeconfig,
    ])
    .await;
    assert!(history.contains("Upgrade complete"), "{history}");
}

/// The operator's environment as the chart's Deployment gives it, with the
/// kubelet's part done: fieldRefs resolved, and the secret files of the
/// projected volume written under `mounts`, where the `*_FILE` settings
/// then point. Panics when an env var still takes a Secret's value.
fn deployment_env(
    docs: &[serde_json::Value],
    namespace: &str,
    pod: &str,
    mounts: &std::path::Path,
) -> BTreeMap<String, String> {
    let secrets: Vec<Secret> = docs
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| serde_json::from_value(d.clone()).expect("a Secret"))
        .collect();
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let pod_spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(deployment["spec"]["template"]["spec"].clone()).expect("a pod spec");
    let container = &pod_spec.containers[0];
    let mut mounted = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .expect("a mounted volume");
        let sources = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        let dir = mounts.join(mount.name.as_str());
        std::fs::create_dir_all(&dir).expect("a mount directory");
        for source in sources.filter_map(|s| s.secret.as_ref()) {
            let secret = secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(source.name.as_str()))
                .unwrap_or_else(|| panic!("the chart renders no Secret {}", source.name));
            for item in source.items.iter().flatten() {
                let value = secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(&item.key))
                    .unwrap_or_else(|| panic!("the chart renders no {}/{}", source.name, item.key));
                std::fs::write(dir.join(&item.path), value).expect("writing a secret file");
            }
        }
        mounted.push((mount.mount_path.clone(), dir));
    }
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => mounted
                    .iter()
                    .find_map(|(path, dir)| {
                        let file = value.strip_prefix(path.as_str())?;
                        Some(format!("{}{file}", dir.display()))
                    })
                    .unwrap_or_else(|| value.clone()),
                (None, Some(source)) => {
                    let field = source
                        .field_ref
                        .as_ref()
                        .unwrap_or_else(|| panic!("{} is not a fieldRef: {source:?}", var.name));
                    match field.field_path.as_str() {
                        "metadata.name" => pod.to_owned(),
                        "metadata.namespace" => namespace.to_owned(),
                        other => panic!("unexpected fieldRef {other}"),
                    }
                }
                (None, None) => String::new(),
            };
            (var.name.clone(), value)
        })
        .collect()
}

/// Sends a signed comment `id`, mentioning smolpaws, to the intake at `url`;
/// returns the name of the run it made.
async fn comment(url: &str, secret: &str, id: i64) -> String {
    let payload = webhook::comment(
        "issue_comment_created.json",
        id,
        "@smolpaws please look at this",
    );
    webhook::deliver(url, secret, &payload).await
}

async fn run_of(
    api: &Api<AgentRun>,
    name: &str,
    what: &str,
    done: fn(&AgentRun) -> bool,
) -> AgentRun {
    let wait = await_condition(api.clone(), name, move |run: Option<&AgentRun>| {
        run.is_some_and(done)
    });
    match tokio::time::timeout(Duration::from_secs(90), wait).await {
        Ok(Ok(Some(run))) => run,
        _ => panic!(
            "{name} never became {what}: {:#?}",
            api.get_opt(name).await.ok().flatten().map(|r| r.status)
        ),
    }
}

#[tokio::test]
async fn the_operator_works_with_the_charts_namespaced_rbac_and_no_more() {
    operator_with_the_charts_rbac(false).await;
}

#[tokio::test]
async fn the_operator_works_cluster_wide_with_the_charts_rbac_serving_only_its_namespaces() {
    operator_with_the_charts_rbac(true).await;
}

/// The operator, run with the rendered Deployment's environment as its
/// ServiceAccount, answers a comment; with one right removed from its
/// (Cluster)Role it fails the next run with `forbidden`. Cluster-wide, a
/// run made in a namespace it does not serve is failed untouched.
async fn operator_with_the_charts_rbac(cluster_wide: bool) {
    smolpaws::tls::install_default_provider();
    let plane = support::private_control_plane().await;
    let admin = plane.client().expect("an admin client");
    let ns = "smolpaws";
    let elsewhere = "elsewhere";
    for namespace in [ns, "team-a", elsewhere] {
        create_namespace(&admin, namespace).await;
        let mut default_account = ServiceAccount::default();
        default_account.metadata.name = Some("default".into());
        Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .create(&PostParams::default(), &default_account)
            .await
            .expect("the default ServiceAccount");
    }

    let github = FakeGitHub::start().await;
    let key = std::fs::read_to_string(app_key()).expect("the test App key");
    let webhook_secret = "chart-webhook-secret";
    let rendered = render(
        "paws",
        ns,
        &[
            "--set",
            "github.appId=1",
            "--set",
            &format!("github.webhookSecret={webhook_secret}"),
            "--set-string",
            &format!("github.privateKey={key}"),
            "--set",
            "allowedActors={Codertocat}",
            "--set",
            "allowedOwners={Codertocat}",
            "--set",
            "llm.model=scripted-model",
            "--set",
            "logFormat=json",
            "--set",
            &format!("rbac.namespaced={}", !cluster_wide),
            "--set",
            // An empty list, or team-a beside the release namespace.
            &format!(
                "sandboxNamespaces={{{}}}",
                if cluster_wide { "team-a" } else { ns }
            ),
        ],
    )
    .await;
    let docs = documents(&rendered);
    apply(&admin, &docs).await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let agent = stand_in_agent(dir.path(), Agent::Replies("Done, with least privilege."));
    let _kubelet = Kubelet::start(admin.clone(), ns, move |_| Behaviour::Run(agent.clone()));

    let mut env = deployment_env(&docs, ns, "paws-smolpaws-0", dir.path());
    let (intake, results) = (support::free_port(), support::free_port());
    // What differs from the cluster: addresses, and GitHub is the fake.
    env.insert("SMOLPAWS_INTAKE_ADDR".into(), format!("127.0.0.1:{intake}"));
    env.insert(
        "SMOLPAWS_RESULT_ADDR".into(),
        format!("127.0.0.1:{results}"),
    );
    env.insert(
        "SMOLPAWS_RESULT_URL".into(),
        format!("http://127.0.0.1:{results}"),
    );
    env.insert("GITHUB_API_URL".into(), github.url.clone());
    let _operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_smolpaws"))
        .arg("operator")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .env("KUBECONFIG", plane.kubeconfig_path())
        .env(
            "KUBE_RS_DEBUG_IMPERSONATE_USER",
            format!("system:serviceaccount:{ns}:paws-smolpaws"),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("the operator starts");

    let runs: Api<AgentRun> = Api::namespaced(admin.clone(), ns);
    let intake_url = format!("http://127.0.0.1:{intake}");
    let name = comment(&intake_url, webhook_secret, 1).await;
    let run = run_of(&runs, &name, "replied", |run| {
        run.status.as_ref().is_some_and(|s| s.reply.is_some())
    })
    .await;
    assert_eq!(run.phase(), smolpaws::api::Phase::Succeeded);
    // The chart keeps a progress comment, and the answer is its own reply.
    let comments = github.comments();
    assert_eq!(comments.len(), 2, "a progress comment and one reply");
    assert!(comments[0].body.starts_with("✅ smolpaws finished"));
    assert!(comments[1].body.contains("Done, with least privilege."));

    if cluster_wide {
        // Watched, but not served: whoever made it chose the repository
        // and the installation, and nothing acts on them.
        let outsiders: Api<AgentRun> = Api::namespaced(admin.clone(), elsewhere);
        let mut outsider = AgentRun::new(
            "outsider",
            support::runs::issue_spec("Codertocat/Hello-World", 77, "Codertocat"),
        );
        outsider.metadata.namespace = Some(elsewhere.into());
        outsiders
            .create(&PostParams::default(), &outsider)
            .await
            .expect("an AgentRun elsewhere");
        let refused = run_of(&outsiders, "outsider", "refused", |run| {
            run.phase() == smolpaws::api::Phase::Failed
        })
        .await;
        let message = refused.status.and_then(|s| s.message).unwrap_or_default();
        assert!(
            message.contains("does not serve namespace elsewhere"),
            "{message}"
        );
        assert!(refused.metadata.finalizers.is_none(), "not held");
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), elsewhere)
            .list(&Default::default())
            .await
            .expect("pods elsewhere");
        assert!(pods.items.is_empty(), "no sandbox elsewhere");
        assert_eq!(github.comments().len(), 2, "nothing in its thread");
        assert!(
            github.reactions().iter().all(|(comment, _)| *comment != 77),
            "no reaction to its comment"
        );
    }

    // One right fewer: sandbox pods can no longer be created, and the run
    // says so.
    let mut rules = operator_rules(&admin, ns, cluster_wide).await;
    for rule in rules.iter_mut() {
        if rule.resources.iter().flatten().any(|r| r == "pods") {
            rule.verbs.retain(|verb| verb != "create");
        }
    }
    set_operator_rules(&admin, ns, cluster_wide, rules).await;
    let name = comment(&intake_url, webhook_secret, 2).await;
    let run = run_of(&runs, &name, "failed", |run| {
        run.phase() == smolpaws::api::Phase::Failed
    })
    .await;
    let message = run.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("forbidden"), "{message}");
}

/// The operator's rules: its ClusterRole's, or its Role's in `ns`.
async fn operator_rules(
    admin: &kube::Client,
    ns: &str,
    cluster_wide: bool,
) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let rules = if cluster_wide {
        Api::<ClusterRole>::all(admin.clone())
            .get("paws-smolpaws")
            .await
            .expect("the ClusterRole")
            .rules
    } else {
        Api::<Role>::namespaced(admin.clone(), ns)
            .get("paws-smolpaws")
            .await
            .expect("the Role")
            .rules
    };
    rules.unwrap_or_default()
}

/// Replaces the operator's rules with `rules`.
async fn set_operator_rules(
    admin: &kube::Client,
    ns: &str,
    cluster_wide: bool,
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) {
    let params = PatchParams::default();
    let patch = Patch::Merge(serde_json::json!({ "rules": rules }));
    if cluster_wide {
        Api::<ClusterRole>::all(admin.clone())
            .patch("paws-smolpaws", &params, &patch)
            .await
            .expect("the narrowed ClusterRole");
    } else {
        Api::<Role>::namespaced(admin.clone(), ns)
            .patch("paws-smolpaws", &params, &patch)
            .await
            .expect("the narrowed Role");
    }
}
