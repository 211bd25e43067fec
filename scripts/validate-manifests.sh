#!/usr/bin/env bash
# Offline checks of the deployment manifests in deploy/ (no cluster needed):
#   1. every manifest (not kustomization.yaml, not the Containerfile) validates against the
#      Kubernetes 1.33 OpenAPI schemas in strict mode (unknown fields are errors), using the
#      PyPI package kubernetes-validate (installed if missing); an unknown kind is an error too;
#   2. config.conf and kubeconfig.conf embedded in the ConfigMap parse as YAML, have the right
#      kind/apiVersion, and agree with the paths the DaemonSet mounts and passes;
#   3. `kubectl kustomize deploy/` builds (skipped when kubectl is not installed);
#   4. kubenat itself accepts config.conf: the daemon runs for 3 s in --dry-run mode against
#      examples/demo and programs the clusterCIDR and masquerade bit from the file.
#   5. least privilege: the kubenat container is unprivileged, drops ALL capabilities and adds
#      exactly NET_ADMIN and NET_RAW, cannot escalate; the ClusterRole grants only get, list
#      and watch; metrics are bound to 127.0.0.1 in config.conf.
# Exits non-zero on the first failing step. Usage: scripts/validate-manifests.sh
set -euo pipefail

cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.33.0}
DEPLOY=deploy

fail() {
    echo "validate-manifests: FAIL: $*" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. schema validation -----------------------------------------------------------------
py=${PYTHON:-python3}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/kubenat/validate-venv"
if ! "$py" -c 'import kubernetes_validate' 2>/dev/null; then
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
        py="$venv/bin/python"
    else
        echo "== installing kubernetes-validate"
        if ! "$py" -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33'; then
            # An externally managed Python (PEP 668) refuses: use a private virtualenv.
            "$py" -m venv "$venv" || fail "cannot install kubernetes-validate (no pip, no venv)"
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33' ||
                fail "cannot install kubernetes-validate"
            py="$venv/bin/python"
        fi
    fi
fi

manifests=()
for f in "$DEPLOY"/*.yaml "$DEPLOY"/*.yml; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in kustomization.yaml | kustomization.yml) continue ;; esac
    manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || fail "no manifests in $DEPLOY/"

echo "== kubernetes-validate --strict against Kubernetes $K8S_VERSION ($("$py" -m kubernetes_validate --version))"
rc=0
out=$("$py" -m kubernetes_validate --kubernetes-version "$K8S_VERSION" --strict "${manifests[@]}" 2>&1) || rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "schema validation failed (exit $rc)"
# kubernetes-validate only warns (exit 0) when it has no schema for a kind: a typo in kind or
# apiVersion would slip through, so any warning fails here.
if grep -q '^WARN' <<<"$out"; then fail "schema validation warned (unknown kind or apiVersion?)"; fi

# --- 2. the files embedded in the ConfigMap -----------------------------------------------
echo "== embedded config.conf and kubeconfig.conf"
if "$py" -c 'import yaml' 2>/dev/null; then
    "$py" - "$DEPLOY/configmap.yaml" "$DEPLOY/daemonset.yaml" "$work/config.conf" <<'PY' || fail "embedded config.conf / kubeconfig.conf"
import sys
import yaml

cm_path, ds_path, out_path = sys.argv[1:4]
errors = []

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

cms = [d for d in load(cm_path) if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "kubenat"]
if len(cms) != 1:
    sys.exit(f"{cm_path}: expected one ConfigMap named kubenat, found {len(cms)}")
data = cms[0].get("data") or {}
parsed = {}
for key in ("config.conf", "kubeconfig.conf"):
    if key not in data:
        errors.append(f"ConfigMap kubenat has no {key}")
        continue
    try:
        doc = yaml.safe_load(data[key])
    except yaml.YAMLError as e:
        errors.append(f"{key} is not valid YAML: {e}")
        continue
    if not isinstance(doc, dict):
        errors.append(f"{key} is not a YAML mapping")
        continue
    parsed[key] = doc
    print(f"OK {key} parses as YAML ({len(doc)} top-level keys)")

config, kubeconfig = parsed.get("config.conf"), parsed.get("kubeconfig.conf")
if config is not None:
    if config.get("apiVersion") != "kubeproxy.config.k8s.io/v1alpha1" or config.get("kind") != "KubeProxyConfiguration":
        errors.append("config.conf is not a kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration")
if kubeconfig is not None:
    if kubeconfig.get("kind") != "Config" or kubeconfig.get("apiVersion") != "v1":
        errors.append("kubeconfig.conf is not a v1 Config")
    contexts = {c.get("name"): c.get("context", {}) for c in kubeconfig.get("contexts") or []}
    clusters = {c.get("name"): c.get("cluster", {}) for c in kubeconfig.get("clusters") or []}
    users = {u.get("name") for u in kubeconfig.get("users") or []}
    ctx = contexts.get(kubeconfig.get("current-context"))
    if ctx is None:
        errors.append("kubeconfig.conf: current-context names no context")
    else:
        if ctx.get("user") not in users:
            errors.append(f"kubeconfig.conf: context user {ctx.get('user')!r} is not defined")
        cluster = clusters.get(ctx.get("cluster"))
        if cluster is None:
            errors.append(f"kubeconfig.conf: context cluster {ctx.get('cluster')!r} is not defined")
        elif not str(cluster.get("server", "")).startswith("https://"):
            errors.append("kubeconfig.conf: cluster server is not an https:// URL")
        elif "API_SERVER_HOST" in cluster["server"]:
            print("note: kubeconfig.conf still says API_SERVER_HOST; replace it before applying")

# The DaemonSet must pass --config inside the ConfigMap's mount, and config.conf must point at
# the mounted kubeconfig.conf.
dss = [d for d in load(ds_path) if d.get("kind") == "DaemonSet"]
if len(dss) != 1:
    errors.append(f"{ds_path}: expected one DaemonSet, found {len(dss)}")
else:
    pod = dss[0]["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod.get("volumes", []) if (v.get("configMap") or {}).get("name") == "kubenat"}
    container = next((c for c in pod["containers"] if c["name"] == "kubenat"), None)
    if container is None:
        errors.append("DaemonSet has no container named kubenat")
    else:
        mounts = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", []) if m["name"] in volumes]
        args = container.get("command", []) + container.get("args", [])
        flag = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
        if not mounts:
            errors.append("the kubenat ConfigMap is not mounted in the kubenat container")
        elif flag != f"{mounts[0]}/config.conf":
            errors.append(f"--config={flag} is not {mounts[0]}/config.conf (the ConfigMap mount)")
        elif config is not None:
            want = f"{mounts[0]}/kubeconfig.conf"
            got = (config.get("clientConnection") or {}).get("kubeconfig")
            if got != want:
                errors.append(f"config.conf clientConnection.kubeconfig is {got!r}, the mount gives {want!r}")
            else:
                print(f"OK --config and clientConnection.kubeconfig match the ConfigMap mount {mounts[0]}")

if "config.conf" in data:
    with open(out_path, "w") as f:
        f.write(data["config.conf"])
for e in errors:
    print(f"ERROR {e}")
sys.exit(1 if errors else 0)
PY
else
    echo "skipped: python3 has no yaml module"
    # Still extract config.conf for step 4 (the block scalar under "config.conf: |").
    awk '/^  config.conf: \|/{on=1; next} on && /^  [^ ]/{on=0} on{sub(/^    /, ""); print}' \
        "$DEPLOY/configmap.yaml" >"$work/config.conf"
fi
[ -s "$work/config.conf" ] || fail "could not extract config.conf from $DEPLOY/configmap.yaml"

# --- 5. least privilege (run before the slower steps) -------------------------------------
echo "== least privilege: securityContext, RBAC verbs, metrics address"
"$py" - "$DEPLOY" <<'PY' || fail "least privilege"
import glob
import sys
import yaml

deploy = sys.argv[1]
docs = []
for path in sorted(glob.glob(f"{deploy}/*.yaml")):
    with open(path) as f:
        docs += [(path, d) for d in yaml.safe_load_all(f) if d]
errors = []

dss = [(p, d) for p, d in docs if d.get("kind") == "DaemonSet"]
for path, ds in dss:
    pod = ds["spec"]["template"]["spec"]
    for key in ("hostPID", "hostIPC"):
        if pod.get(key):
            errors.append(f"{path}: {key} is set")
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        sc = c.get("securityContext") or {}
        caps = sc.get("capabilities") or {}
        name = f"{path}: container {c['name']}"
        if sc.get("privileged"):
            errors.append(f"{name} is privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation is not false")
        if caps.get("drop") != ["ALL"]:
            errors.append(f"{name}: capabilities.drop is {caps.get('drop')!r}, not [ALL]")
        if c["name"] == "kubenat" and sorted(caps.get("add") or []) != ["NET_ADMIN", "NET_RAW"]:
            errors.append(f"{name}: capabilities.add is {caps.get('add')!r}, not [NET_ADMIN, NET_RAW]")
        if c["name"] != "kubenat" and caps.get("add"):
            errors.append(f"{name}: adds capabilities {caps['add']!r}")
if not dss:
    errors.append("no DaemonSet found")

read_only = {"get", "list", "watch"}
roles = [(p, d) for p, d in docs if d.get("kind") in ("ClusterRole", "Role")]
for path, role in roles:
    for rule in role.get("rules") or []:
        verbs = set(rule.get("verbs") or [])
        if not verbs <= read_only:
            errors.append(f"{path}: {role['kind']} {role['metadata']['name']} grants {sorted(verbs - read_only)}")
        if "*" in (rule.get("resources") or []) or "*" in (rule.get("apiGroups") or []):
            errors.append(f"{path}: {role['kind']} {role['metadata']['name']} uses a wildcard")
if not roles:
    errors.append("no ClusterRole found")

for path, cm in docs:
    if cm.get("kind") == "ConfigMap" and "config.conf" in (cm.get("data") or {}):
        config = yaml.safe_load(cm["data"]["config.conf"]) or {}
        metrics = config.get("metricsBindAddress", "127.0.0.1:10249")
        if not str(metrics).startswith("127.0.0.1:"):
            errors.append(f"{path}: metricsBindAddress {metrics!r} is not on 127.0.0.1")

for e in errors:
    print(f"ERROR {e}")
if not errors:
    print(f"OK {len(dss)} DaemonSet(s): drop ALL, add NET_ADMIN+NET_RAW only; {len(roles)} role(s) read-only; metrics on 127.0.0.1")
sys.exit(1 if errors else 0)
PY

# --- 3. kustomize -------------------------------------------------------------------------
echo "== kubectl kustomize $DEPLOY"
if command -v kubectl >/dev/null 2>&1; then
    objects=$(kubectl kustomize "$DEPLOY") || fail "kubectl kustomize $DEPLOY"
    echo "OK builds: $(grep -c '^kind:' <<<"$objects") objects"
else
    echo "skipped: kubectl is not installed"
fi

# --- 4. kubenat accepts config.conf -------------------------------------------------------
echo "== kubenat --config config.conf (3 s dry run against examples/demo)"
cargo build -q --bin kubenat || fail "cargo build"
rc=0
# (With --config, kube-proxy's other flags are ignored, as kube-proxy ignores them; the servers
# bind the file's addresses, and a port in use is only retried, never fatal.)
timeout 3 cargo run -q --bin kubenat -- --config "$work/config.conf" --objects examples/demo --dry-run \
    --hostname-override node-1 \
    --flannel-subnet-file "$work/no-subnet.env" >"$work/daemon.log" 2>&1 || rc=$?
if [ "$rc" -ne 124 ]; then
    cat "$work/daemon.log" >&2
    fail "kubenat exited with $rc within 3 s (expected it still running: exit 124 from timeout)"
fi
# The rules it would have written must use the file's clusterCIDR and masqueradeBit 14.
grep -q -- '10.244.0.0/16' "$work/daemon.log" || { cat "$work/daemon.log" >&2; fail "clusterCIDR from config.conf not in the rules"; }
grep -q -- '0x4000' "$work/daemon.log" || { cat "$work/daemon.log" >&2; fail "masquerade mark 0x4000 not in the rules"; }
echo "config accepted"
echo "validate-manifests: all checks passed"
