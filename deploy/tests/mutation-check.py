#!/usr/bin/env python3
"""Mutation check for the deploy tests: breaks the chart, manifests, examples,
image and guest files in known ways, one at a time, and asserts that the test
suite meant to notice each break fails. Guards against tests that pass
vacuously. Works on a scratch copy of deploy/ (the tree is never modified).

    deploy/tests/mutation-check.py        (ctest: deploy.mutations)

Needs what install-tools.sh installs (node_modules and the pinned helm and
kubectl in .tools/bin, which the scratch copy links to).
"""
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# (what breaks, file under deploy/, old text, new text, suite that must fail)
muts=[
 ("registrar healthPort collides with plugin's", "helm/cocostorage/values.yaml", "    healthPort: 9809", "    healthPort: 9808", "chart"),
 ("typo mountPropagaton", "helm/cocostorage/templates/daemonset.yaml", "              mountPropagation: HostToContainer\n            - name: kubelet-csi-publish", "              mountPropagaton: HostToContainer\n            - name: kubelet-csi-publish", "chart"),
 ("backing root mounted at another path", "helm/cocostorage/templates/daemonset.yaml", "              mountPath: {{ $node.backingRoot }}", "              mountPath: /data", "chart"),
 ("Bidirectional propagation", "helm/cocostorage/templates/daemonset.yaml", "              mountPropagation: HostToContainer\n            - name: kubelet-csi-publish", "              mountPropagation: Bidirectional\n            - name: kubelet-csi-publish", "chart"),
 ("chart changed, manifests not regenerated", "helm/cocostorage/values.yaml", "    workerThreads: 10", "    workerThreads: 12", "manifests"),
 ("RBAC lacks csistoragecapacities create", "helm/cocostorage/templates/rbac.yaml", "    verbs: [get, list, watch, create, update, patch, delete]", "    verbs: [get, list, watch, update, patch, delete]", "chart"),
 ("StorageClass Immediate binding", "helm/cocostorage/templates/storageclasses.yaml", "volumeBindingMode: WaitForFirstConsumer", "volumeBindingMode: Immediate", "chart"),
 ("bad memory quantity", "helm/cocostorage/values.yaml", "      limits: {memory: 128Mi}\n    # -- Port", "      limits: {memory: 128 MiB}\n    # -- Port", "chart"),
 ("wrong indentation (nindent)", "helm/cocostorage/templates/daemonset.yaml", "            {{- toYaml $node.plugin.resources | nindent 12 }}", "            {{- toYaml $node.plugin.resources | nindent 10 }}", "chart"),
 ("template syntax error", "helm/cocostorage/templates/csidriver.yaml", "{{- end }}", "{{- ennd }}", "chart"),
 ("registration path not the socket dir", "helm/cocostorage/templates/daemonset.yaml", "--kubelet-registration-path={{ $socketDir }}/csi.sock", "--kubelet-registration-path=/var/lib/kubelet/plugins/cocostorage/csi.sock", "chart"),
 ("ownerref level 0 (pod) instead of the DaemonSet", "helm/cocostorage/templates/daemonset.yaml", "--capacity-ownerref-level=1", "--capacity-ownerref-level=0", "chart"),
 ("capability added", "helm/cocostorage/templates/_helpers.tpl", "  drop: [ALL]", "  drop: [ALL]\n  add: [SYS_ADMIN]", "chart"),
 ("RBD plugin cannot map (unprivileged)", "helm/cocostorage/templates/_helpers.tpl", "privileged: true", "privileged: false", "chart"),
 ("RBD class lacks the node-stage secret", "helm/cocostorage/templates/_helpers.tpl", "csi.storage.k8s.io/node-stage-secret-name:", "csi.storage.k8s.io/node-stage-secret-nam:", "chart"),
 ("unknown StorageClass param", "helm/cocostorage/templates/_helpers.tpl", "keySource: ephemeral\n", "keySource: ephemeral\ncipher: aes\n", "chart"),
 ("Dockerfile instruction typo", "image/Dockerfile", "FROM debian:${DEBIAN_RELEASE}-slim AS runtime", "FORM debian:${DEBIAN_RELEASE}-slim AS runtime", "image"),
 ("Dockerfile runtime package typo", "image/Dockerfile", "libgrpc++1.51 libprotobuf32", "libgrpc++1.15 libprotobuf32", "image"),
 ("unit gets ProtectSystem", "guest/cocostorage-agent.service", "PrivateMounts=no", "PrivateMounts=no\nProtectSystem=full", "guest"),
 ("unit key typo", "guest/cocostorage-agent.service", "RestartSec=1", "RestartSek=1", "guest"),
 ("agent.json unknown key", "guest/agent.json", '"log_level"', '"loglevel"', "guest"),
 ("real CDH left on cdh.sock", "guest/cdh.toml", 'socket = "unix:///run/confidential-containers/cdh-upstream.sock"', 'socket = "unix:///run/confidential-containers/cdh.sock"', "guest"),
 ("manifest: kata-agent waits for the CDH on cdh.sock", "guest/components.toml", 'wait_socket  = "/run/confidential-containers/cdh-upstream.sock"', 'wait_socket  = "${cdh_socket}"', "guest"),
 ("kata-agent no longer requires the agent", "guest/kata-agent.service.d/10-cocostorage.conf", "Requires=cocostorage-agent.service", "Wants=cocostorage-agent.service", "guest"),
 ("example StorageClass typo", "examples/ephemeral-pod.yaml", "storageClassName: cocostorage-ephemeral", "storageClassName: cocostorage-ephemeal", "examples"),
 ("example field typo", "examples/block-pod.yaml", "devicePath: /dev/xvda", "devicepath: /dev/xvda", "examples"),
 ("example without RuntimeClass", "examples/statefulset-kbs.yaml", "      runtimeClassName: kata-qemu-tdx # or kata-qemu-snp\n", "", "examples"),
 ("chart passes a flag the plugin does not parse", "helm/cocostorage/templates/daemonset.yaml", "- --log-level={{ $node.logLevel }}", "- --loglevel={{ $node.logLevel }}", "chart"),
 ("inline example with a KBS key", "examples/inline-ephemeral-pod.yaml", "keySource: ephemeral", "keySource: kbs", "examples"),
 ("manifest hand-edited", "manifests/daemonset.yaml", "--worker-threads=10", "--worker-threads=11", "manifests"),
 ("admission policy lets runc pods through", "helm/cocostorage/templates/admissionpolicy.yaml", "        !(variables.usesVolumes", "        (variables.usesVolumes", "admission"),
 ("admission policy matches another driver", "helm/cocostorage/templates/admissionpolicy.yaml", "v.csi.driver == {{ squote $.Values.driverName }}", "v.csi.driver == 'csi.example.com'", "admission"),
 ("admission policy ignores ephemeral volumes", "helm/cocostorage/templates/admissionpolicy.yaml", "in variables.storageClasses\n        : variables.defaultClassIsOurs)))", "in variables.storageClasses\n        : variables.defaultClassIsOurs)) && false)", "admission"),
 ("admission policy fails open", "helm/cocostorage/templates/admissionpolicy.yaml", "failurePolicy: Fail", "failurePolicy: Ignore", "admission"),
 ("binding names no policy", "helm/cocostorage/templates/admissionpolicy.yaml", "policyName: {{ $fullname }}-confidential-{{ .suffix }}", "policyName: {{ $fullname }}-confidential", "admission"),
 ("allowed runtime classes include a non-confidential one", "helm/cocostorage/values.yaml", "  allowedRuntimeClasses: [kata-qemu-snp, kata-qemu-tdx]", "  allowedRuntimeClasses: [kata-qemu-snp, kata-qemu-tdx, kata-qemu]", "admission"),
 ("policy changed, manifests not regenerated", "helm/cocostorage/values.yaml", "  allowedRuntimeClasses: [kata-qemu-snp, kata-qemu-tdx]", "  allowedRuntimeClasses: [kata-qemu-tdx, kata-qemu-snp]", "manifests"),
 ("example claims a multi-node access mode", "examples/statefulset-kbs.yaml", "accessModes: [ReadWriteOncePod]", "accessModes: [ReadWriteMany]", "examples"),
 ("provisioner without --extra-create-metadata", "helm/cocostorage/values.yaml", "    extraCreateMetadata: true", "    extraCreateMetadata: false", "chart"),
 ("kbs class default shares one key", "helm/cocostorage/values.yaml", 'kbsResourceUri: "kbs:///${pvc.namespace}/volume-keys/${pvc.name}"', 'kbsResourceUri: "kbs:///default/cocostorage/volume-key"', "chart"),
 ("example KBS class shares one key", "examples/storageclass-kbs.yaml", 'kbsResourceUri: "kbs:///${pvc.namespace}/volume-keys/${pvc.name}"', 'kbsResourceUri: "kbs:///default/cocostorage/volume-key"', "examples"),
 ("inline example loses its RuntimeClass", "examples/inline-ephemeral-pod.yaml", "  runtimeClassName: kata-qemu-snp\n", "", "admission"),
]


def run_suite(deploy, suite):
    r = subprocess.run(["node", "--test", f"{suite}.test.mjs"], cwd=os.path.join(deploy, "tests"),
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


def make_copy(tmp):
    """A scratch copy of deploy/ (and the files outside it the tests read) under tmp."""
    deploy = os.path.join(tmp, "deploy")
    shutil.copytree(os.path.join(REPO, "deploy"), deploy, symlinks=True,
                    ignore=shutil.ignore_patterns("node_modules", ".tools"))
    for d in ["node_modules", ".tools"]:
        os.symlink(os.path.join(HERE, d), os.path.join(deploy, "tests", d))
    for rel in ["scripts/install-deps.sh", "guest-agent/src/main.cc", "guest-agent/src/cdh/forwarder.h",
                "guest-agent/src/cdh/secure_mount.h", "csi-driver/CMakeLists.txt",
                "csi-driver/src/main.cc", "csi-driver/src/params.cc"]:
        if os.path.exists(os.path.join(REPO, rel)):
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            shutil.copy(os.path.join(REPO, rel), os.path.join(tmp, rel))
    return deploy


def check_mutation(mut):
    """(missed, line): one mutation on its own scratch copy, so they can run in parallel."""
    name, rel, old, new, suite = mut
    with tempfile.TemporaryDirectory(prefix="coco-mutation-") as tmp:
        deploy = make_copy(tmp)
        path = os.path.join(deploy, rel)
        orig = open(path).read()
        if old not in orig:
            return True, f"STALE  {name}: the text to break is no longer in {rel}"
        open(path, "w").write(orig.replace(old, new, 1))
        rc, out = run_suite(deploy, suite)
    first = next((l.strip() for l in out.splitlines() if l.strip().startswith("not ok")), "")
    if rc == 0:
        return True, f"MISSED {name} ({suite}.test.mjs passed)"
    return False, f"caught {name}: {first}"


def main():
    with tempfile.TemporaryDirectory(prefix="coco-mutation-") as tmp:
        deploy = make_copy(tmp)
        for suite in sorted({m[4] for m in muts}):
            rc, out = run_suite(deploy, suite)
            if rc != 0:
                print(out)
                print(f"baseline: {suite}.test.mjs fails on the unmodified copy")
                return 1

    # One worker per core: each suite run is a node process bound on CPU.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(check_mutation, muts))
    missed = 0
    for was_missed, line in results:
        missed += was_missed
        print(line)
    print(f"{len(muts) - missed} passed, {missed} failed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
