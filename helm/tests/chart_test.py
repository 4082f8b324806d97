#!/usr/bin/env python3
"""Checks the Helm chart with Helm's own engine (helm-python-sdk binds Helm's Go SDK; no
cluster, no helm binary):

1. `helm lint --strict` with each scenario's values (helm/tests/values/*.yaml);
2. renders each scenario as an install and writes its manifests for kubernetes-validate and
   yamllint (helm/ci.sh runs those)
   (OUT/<scenario>/objects/: one object a file; OUT/<scenario>/manifest.yaml: as `helm template`
   prints it);
3. asserts on the rendered objects: what every scenario must hold (probes, securityContext,
   the migration hook, a PDB per role, peers wired to the chart's Services, ...) and what
   each scenario is for (Redis reaches the gateway, TLS turns the probes into TCP probes, ...);
4. renders every file in helm/tests/bad/ and fails unless Helm refuses it, with the reason
   its first line names;
5. with --binary PATH (a built `sneakernet`): gives the binary each pod's environment (the
   ConfigMap, the Deployment's env, stand-ins for Secret values and mounted files; the
   migration job's too) and checks that it accepts it as configuration: `sneakernet migrate`
   against an unreachable database must fail at connecting, not at reading its configuration
   (an unknown key, a bad value).

Usage: chart_test.py OUT_DIR [--binary PATH]
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import helm_python as helm
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CHART = HERE.parent / "sneakernet"
RELEASE, NAMESPACE = "kiosks", "sneakernet"
ROLES = ("auth", "orders", "content", "gateway")
FULL = f"{RELEASE}-sneakernet"

failures: list[str] = []


def check(condition: bool, what: str) -> None:
    if not condition:
        failures.append(what)


def load_values(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def lint(scenario: str, values: dict) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    for message in report.get("messages", []):
        # 1 = info (e.g. "icon is recommended"); warnings fail under strict like errors.
        if message.get("severity", 0) >= 2:
            failures.append(f"[{scenario}] helm lint: {message.get('path')}: {message.get('error')}")
    for error in report.get("errors") or []:
        failures.append(f"[{scenario}] helm lint: {error}")


def render(values: dict) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def objects_of(rendered: dict[str, str]) -> list[dict]:
    objects = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def write(out: pathlib.Path, rendered: dict[str, str], objects: list[dict]) -> None:
    """OUT/<scenario>/objects/: one object a file (kubernetes-validate); OUT/<scenario>/manifest.yaml:
    the rendering as `helm template` prints it, documents split and trimmed (yamllint)."""
    (out / "objects").mkdir(parents=True, exist_ok=True)
    for old in (out / "objects").glob("*.yaml"):
        old.unlink()
    for obj in objects:
        file = out / "objects" / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        file.write_text("---\n" + yaml.safe_dump(obj, sort_keys=False))
    documents = []
    for name, text in sorted(rendered.items()):
        if not name.endswith(".yaml"):
            continue
        for doc in re.split(r"(?m)^---[ \t]*$", text):
            if doc.strip():
                documents.append(f"---\n# Source: {name}\n{doc.strip(chr(10))}\n")
    (out / "manifest.yaml").write_text("".join(documents))


def index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def every_scenario(scenario: str, objs: dict, values: dict) -> None:
    """What every rendering must hold."""
    tag = f"[{scenario}]"
    tls = values.get("tls", {}).get("enabled", False)
    config = objs.get(("ConfigMap", f"{FULL}-config"))
    check(config is not None, f"{tag} the shared ConfigMap")
    data = config["data"] if config else {}
    check(data.get("SNEAKERNET_LISTEN") == "0.0.0.0:50051", f"{tag} services listen on all addresses")
    check(all(k.startswith("SNEAKERNET_") for k in data), f"{tag} ConfigMap holds SNEAKERNET_* only")

    for role in ROLES:
        name = f"{FULL}-{role}"
        deployment = objs.get(("Deployment", name))
        check(deployment is not None, f"{tag} Deployment {name}")
        if deployment is None:
            continue
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        check(container["args"] == ["serve", "--role", role], f"{tag} {role} runs `serve --role {role}`")
        env = env_of(container)

        # Probes: Kubernetes' native gRPC probes against the health service (TCP under TLS,
        # which kubelet's gRPC probe cannot speak).
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            check(probe in container, f"{tag} {role} has a {probe}")
        if tls:
            check("tcpSocket" in container.get("readinessProbe", {}), f"{tag} {role}: TCP probes under TLS")
        else:
            readiness = container.get("readinessProbe", {}).get("grpc", {})
            check(readiness.get("port") == 50051, f"{tag} {role}: gRPC readiness probe")
            check(
                readiness.get("service", "").startswith(f"sneakernet.{role}.v1."),
                f"{tag} {role}: readiness asks health about the role's own service",
            )
            check("grpc" in container.get("livenessProbe", {}), f"{tag} {role}: gRPC liveness probe")

        # Security: non-root, read-only root, no capabilities, seccomp; writable emptyDirs.
        psc = pod["securityContext"]
        check(psc.get("runAsNonRoot") is True, f"{tag} {role}: pod runAsNonRoot")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{tag} {role}: seccomp")
        csc = container["securityContext"]
        check(csc.get("readOnlyRootFilesystem") is True, f"{tag} {role}: read-only root filesystem")
        check(csc.get("allowPrivilegeEscalation") is False, f"{tag} {role}: no privilege escalation")
        check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{tag} {role}: drops ALL capabilities")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in ("/var/lib/sneakernet", "/tmp"):
            check(
                path in mounts and "emptyDir" in volumes.get(mounts[path], {}),
                f"{tag} {role}: {path} is a writable emptyDir",
            )
        check(pod.get("automountServiceAccountToken") is False, f"{tag} {role}: no API token")

        # Resources, graceful stop.
        resources = container.get("resources", {})
        check("requests" in resources and "memory" in resources.get("limits", {}), f"{tag} {role}: resources")
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = pod["terminationGracePeriodSeconds"]
        shutdown_grace = int(data.get("SNEAKERNET_SHUTDOWN_GRACE", "0s").rstrip("s"))
        check(
            grace >= sleep + shutdown_grace + 5,
            f"{tag} {role}: terminationGracePeriodSeconds {grace} covers preStop {sleep}s + shutdown_grace {shutdown_grace}s",
        )

        # The database from a Secret, never in clear in the pod spec.
        check(
            isinstance(env.get("SNEAKERNET_DATABASE_URL"), dict)
            and "secretKeyRef" in env["SNEAKERNET_DATABASE_URL"],
            f"{tag} {role}: database URL from a Secret",
        )
        # Peers at the chart's Services.
        scheme = "https" if tls else "http"
        service_url = lambda peer: f"{scheme}://{FULL}-{peer}.{NAMESPACE}.svc:50051"  # noqa: E731
        if role != "auth":
            check(env.get("SNEAKERNET_AUTH__URL") == service_url("auth"), f"{tag} {role}: auth.url")

        # A Service and a PodDisruptionBudget selecting the role's pods.
        labels = deployment["spec"]["selector"]["matchLabels"]
        service = objs.get(("Service", name))
        check(service is not None and service["spec"]["selector"] == labels, f"{tag} {role}: Service")
        pdb = objs.get(("PodDisruptionBudget", name))
        check(
            pdb is not None and pdb["spec"]["selector"]["matchLabels"] == labels,
            f"{tag} {role}: PodDisruptionBudget",
        )

    orders = objs[("Deployment", f"{FULL}-orders")]["spec"]["template"]["spec"]
    env = env_of(orders["containers"][0])
    scheme = "https" if tls else "http"
    check(
        env.get("SNEAKERNET_ORDERS__GATEWAY_URL") == f"{scheme}://{FULL}-gateway.{NAMESPACE}.svc:50051",
        f"{tag} orders: orders.gateway_url at the gateway's Service",
    )
    check(
        env.get("SNEAKERNET_ORDERS__CONTENT_URL") == f"{scheme}://{FULL}-content.{NAMESPACE}.svc:50051",
        f"{tag} orders: orders.content_url at the content Service",
    )
    volumes = {v["name"]: v for v in orders["volumes"]}
    check(
        env.get("SNEAKERNET_AUTH__SERVICE_SECRET_FILE") == "/etc/sneakernet/service-credential/secret"
        and "secret" in volumes.get("service-credential", {}),
        f"{tag} orders: its service credential file from a Secret",
    )
    check(
        "secret" in volumes.get("orders-key", {}) and env.get("SNEAKERNET_ORDERS__SECRET_KEY_FILE"),
        f"{tag} orders: the shared QR-sealing key from a Secret",
    )

    gateway = objs[("Deployment", f"{FULL}-gateway")]["spec"]["template"]["spec"]
    spread = gateway.get("topologySpreadConstraints", [])
    check(
        {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"},
        f"{tag} gateway: spread across zones and nodes",
    )
    check(gateway["terminationGracePeriodSeconds"] >= 20, f"{tag} gateway: time to move its kiosks")

    # The migration job: a pre-install/pre-upgrade hook running `sneakernet migrate`.
    job = objs.get(("Job", f"{FULL}-migrate"))
    check(job is not None, f"{tag} the migration Job")
    if job is not None:
        annotations = job["metadata"].get("annotations", {})
        check(
            annotations.get("helm.sh/hook") == "pre-install,pre-upgrade",
            f"{tag} migration Job is a pre-install,pre-upgrade hook",
        )
        check("helm.sh/hook-delete-policy" in annotations, f"{tag} migration Job has a delete policy")
        spec = job["spec"]["template"]["spec"]
        check(spec["containers"][0]["args"] == ["migrate"], f"{tag} migration Job runs `migrate`")
        check(spec["restartPolicy"] == "Never", f"{tag} migration Job restartPolicy Never")
        check(
            spec["containers"][0]["securityContext"].get("readOnlyRootFilesystem") is True,
            f"{tag} migration Job: read-only root filesystem",
        )
        hook_secret = objs.get(("Secret", f"{FULL}-migrate"))
        if hook_secret is not None:
            check(
                int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"])
                < int(annotations.get("helm.sh/hook-weight", "0")),
                f"{tag} the migration's Secret exists before the Job",
            )

    # HPAs only where asked, targeting the right Deployment.
    for role in ("orders", "gateway"):
        hpa = objs.get(("HorizontalPodAutoscaler", f"{FULL}-{role}"))
        enabled = values.get("roles", {}).get(role, {}).get("autoscaling", {}).get(
            "enabled", role == "orders"
        )
        check((hpa is not None) == enabled, f"{tag} {role}: HPA exactly when autoscaling is enabled")
        deployment = objs[("Deployment", f"{FULL}-{role}")]
        check(
            ("replicas" in deployment["spec"]) != enabled,
            f"{tag} {role}: replicas left to the HPA when it is enabled",
        )
        if hpa is not None:
            check(hpa["spec"]["scaleTargetRef"]["name"] == f"{FULL}-{role}", f"{tag} {role}: HPA target")

    # No object outside the chart's prefix; no secret value in clear in a Deployment.
    for (kind, name), obj in objs.items():
        check(name.startswith(FULL), f"{tag} {kind} {name} named after the release")
        if kind == "Deployment":
            text = yaml.safe_dump(obj)
            check("postgres://" not in text and "redis://" not in text, f"{tag} {name}: no URL with credentials inline")


def scenario_specific(scenario: str, objs: dict, values: dict) -> None:
    tag = f"[{scenario}]"
    gateway = objs[("Deployment", f"{FULL}-gateway")]
    gateway_env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    content = objs[("Deployment", f"{FULL}-content")]
    content_env = env_of(content["spec"]["template"]["spec"]["containers"][0])
    if scenario == "defaults":
        check("SNEAKERNET_REDIS_URL" not in gateway_env, f"{tag} no Redis by default")
        check(gateway["spec"]["replicas"] == 1, f"{tag} one gateway replica without Redis")
        check(content_env.get("SNEAKERNET_CONTENT__OBJECT_STORE") == "local", f"{tag} local store")
        check(("PersistentVolumeClaim", f"{FULL}-content-objects") in objs, f"{tag} local store on a PVC")
        check(content["spec"]["strategy"]["type"] == "Recreate", f"{tag} content on an RWO volume recreates")
        check(("Secret", f"{FULL}-orders-key") in objs, f"{tag} generated QR-sealing key Secret")
        check(("Service", f"{FULL}-gateway-kiosks") in objs, f"{tag} the kiosks' gateway Service")
        for kind in ("Ingress", "NetworkPolicy", "ServiceMonitor"):
            check(not any(k == kind for k, _ in objs), f"{tag} no {kind} unless enabled")
    if scenario == "gateway-redis":
        check(gateway["spec"]["replicas"] == 3, f"{tag} three gateway replicas")
        redis = gateway_env.get("SNEAKERNET_REDIS_URL")
        check(
            isinstance(redis, dict) and redis["secretKeyRef"]["name"] == "sneakernet-redis",
            f"{tag} gateway's redis_url from the existing Secret",
        )
        # database.url given in clear: in the chart's Secret, and in the hook's own copy.
        check(("Secret", FULL) in objs, f"{tag} the chart's Secret holds the database URL")
        check(("Secret", f"{FULL}-migrate") in objs, f"{tag} the migration hook's Secret")
    if scenario == "tls":
        for role in ROLES:
            pod = objs[("Deployment", f"{FULL}-{role}")]["spec"]["template"]["spec"]
            env = env_of(pod["containers"][0])
            check(env.get("SNEAKERNET_TLS__CERT") == "/etc/sneakernet/tls/tls.crt", f"{tag} {role}: tls.cert")
            check(env.get("SNEAKERNET_TLS__KEY") == "/etc/sneakernet/tls/tls.key", f"{tag} {role}: tls.key")
            check(env.get("SSL_CERT_FILE") == "/etc/sneakernet/ca/ca.crt", f"{tag} {role}: CA bundle")
            volumes = {v["name"]: v for v in pod["volumes"]}
            check(volumes.get("tls", {}).get("secret", {}).get("secretName") == "sneakernet-tls", f"{tag} {role}: TLS Secret")
        ingress = objs.get(("Ingress", FULL))
        check(
            ingress is not None
            and ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/backend-protocol") == "GRPCS",
            f"{tag} Ingress speaks GRPCS to TLS backends",
        )
    if scenario == "s3":
        check(content["spec"]["replicas"] == 3, f"{tag} content scales out on S3")
        check(content_env.get("SNEAKERNET_CONTENT__OBJECT_STORE") == "s3", f"{tag} object_store s3")
        check(content_env.get("SNEAKERNET_CONTENT__S3_BUCKET") == "sneakernet-content", f"{tag} bucket")
        check(content_env.get("SNEAKERNET_CONTENT__S3_ENDPOINT") == "https://s3.eu-central-1.example.net", f"{tag} endpoint")
        check(
            content_env.get("AWS_ACCESS_KEY_ID", {}).get("secretKeyRef", {}).get("name") == "sneakernet-s3",
            f"{tag} S3 credentials from the existing Secret",
        )
        check(("PersistentVolumeClaim", f"{FULL}-content-objects") not in objs, f"{tag} no PVC with S3")
    if scenario == "production":
        hpa = objs.get(("HorizontalPodAutoscaler", f"{FULL}-gateway"))
        check(hpa is not None and hpa["spec"]["minReplicas"] == 3, f"{tag} gateway HPA from 3 replicas")
        config = objs[("ConfigMap", f"{FULL}-config")]["data"]
        check(config.get("SNEAKERNET_AUTH__ACCESS_TOKEN_TTL") == "10m", f"{tag} nested config key")
        check(config.get("SNEAKERNET_RATE_LIMIT__LOGIN_PER_ADDRESS") == "60", f"{tag} integer config key")
        check(config.get("SNEAKERNET_ORDERS__DEPOSIT_MINOR_UNITS") == "5000", f"{tag} integer, not float")
        check(config.get("SNEAKERNET_METRICS_LISTEN") == "0.0.0.0:9090", f"{tag} metrics_listen")
        check(config.get("SNEAKERNET_DATABASE_SCHEMA_PREFIX") == "prod_", f"{tag} schema prefix")
        monitor = objs.get(("ServiceMonitor", FULL))
        check(
            monitor is not None and monitor["spec"]["endpoints"][0]["port"] == "metrics",
            f"{tag} ServiceMonitor scrapes the metrics port",
        )
        check(("Secret", f"{FULL}-orders-key") not in objs, f"{tag} existing QR-sealing key used")
        auth = objs[("Deployment", f"{FULL}-auth")]["spec"]["template"]["spec"]
        auth_env = env_of(auth["containers"][0])
        check(
            auth_env.get("SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL") == "ops@example.com"
            and auth_env.get("SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE"),
            f"{tag} bootstrap operator wired into auth",
        )
        policies = {name: o for (kind, name), o in objs.items() if kind == "NetworkPolicy"}
        check(len(policies) == 4, f"{tag} a NetworkPolicy per role")
        gateway_policy = policies.get(f"{FULL}-gateway", {})
        peers = [p for rule in gateway_policy.get("spec", {}).get("ingress", []) for p in rule["from"]]
        pod_peers = [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p]
        check(pod_peers == ["orders"], f"{tag} of the release's pods only orders reaches the gateway")
        check(any("ipBlock" in p for p in peers), f"{tag} kiosks reach the gateway")
        ns_peers = [p for p in peers if "namespaceSelector" in p and "podSelector" not in p]
        check(
            all(p["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name") == "monitoring" for p in ns_peers),
            f"{tag} clients (the ingress controller) do not reach the gateway",
        )
        orders_policy = policies.get(f"{FULL}-orders", {})
        orders_peers = [p for rule in orders_policy["spec"]["ingress"] for p in rule["from"]]
        check(not any("ipBlock" in p for p in orders_peers), f"{tag} kiosks do not reach orders")
        ingress = objs.get(("Ingress", FULL))
        paths = [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]] if ingress else []
        check("/sneakernet.gateway.v1.KioskLinkService" in paths and "/sneakernet.auth.v1.AuthService" in paths, f"{tag} Ingress routes by gRPC service")


def bad_values() -> None:
    """Every file in bad/ must be refused; its first comment line says why."""
    with helm.Chart.load(CHART) as chart:
        for path in sorted((HERE / "bad").glob("*.yaml")):
            values = load_values(path)
            try:
                chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as refused:
                reason = " ".join(str(refused).split())
                print(f"  refused as it should be: bad/{path.name}: {reason[:160]}")
                continue
            failures.append(f"bad/{path.name} was accepted; it must be refused")


# What a secretKeyRef stands for when the binary reads a pod's environment: unreachable on
# purpose, so the binary gets as far as connecting and stops there.
SECRET_STAND_INS = {
    "SNEAKERNET_DATABASE_URL": "postgres://sneakernet:stand-in@127.0.0.1:1/sneakernet",
    "SNEAKERNET_REDIS_URL": "redis://127.0.0.1:1",
    "AWS_ACCESS_KEY_ID": "stand-in",
    "AWS_SECRET_ACCESS_KEY": "stand-in",
}


def pod_environment(objs: dict, role: str) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment of a role's container (role "migrate": the hook job's)."""
    if role == "migrate":
        pod = objs[("Job", f"{FULL}-migrate")]["spec"]["template"]["spec"]
    else:
        pod = objs[("Deployment", f"{FULL}-{role}")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = objs[("ConfigMap", source["configMapRef"]["name"])]
        env.update(config_map["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = SECRET_STAND_INS[item["name"]]
    return container["args"], env


def binary_accepts(scenario: str, objs: dict, binary: str, mounts: pathlib.Path) -> None:
    """The binary reads each pod's environment as a valid configuration. Files the pod gets
    from Secrets (/etc/sneakernet/...) are stand-ins under `mounts`: the configuration only
    asks that they be readable files."""
    for role in (*ROLES, "migrate"):
        args, env = pod_environment(objs, role)
        if args[0] == "serve":
            # The same configuration, loaded by a command that stops at the database.
            args = ["migrate", "--role", role]
        for name, value in env.items():
            if value.startswith("/etc/sneakernet/"):
                stand_in = mounts / value.lstrip("/")
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text("stand-in\n")
                env[name] = str(stand_in)
        # Nothing from this machine's environment: only what the pod would have.
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        done = subprocess.run(
            [binary, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        stderr = done.stderr.strip().splitlines()
        last = stderr[-1] if stderr else ""
        check(
            done.returncode != 0 and "cannot connect to database" in last,
            f"[{scenario}] {role}: the binary must accept the pod's configuration and fail only at "
            f"the stand-in database; it said: {last or done.stdout.strip()}",
        )


def main() -> int:
    args = sys.argv[1:]
    binary = None
    if len(args) == 3 and args[1] == "--binary":
        binary = args[2]
        args = args[:1]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(args[0])
    scenarios = sorted((HERE / "values").glob("*.yaml"))
    for path in scenarios:
        scenario = path.stem
        values = load_values(path)
        lint(scenario, values)
        try:
            rendered = render(values)
        except helm.HelmError as error:
            failures.append(f"[{scenario}] does not render: {error}")
            continue
        objects = objects_of(rendered)
        write(out / scenario, rendered, objects)
        objs = index(objects)
        every_scenario(scenario, objs, values)
        scenario_specific(scenario, objs, values)
        if binary:
            binary_accepts(scenario, objs, binary, out / scenario / "mounts")
        kinds = sorted({o["kind"] for o in objects})
        print(f"  {scenario}: {len(objects)} objects ({', '.join(kinds)}) -> {out / scenario}")
    bad_values()
    if failures:
        print(f"\n{len(failures)} chart check(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  FAIL {failure}", file=sys.stderr)
        return 1
    accepted = f", every pod's configuration accepted by {binary}" if binary else ""
    print(
        f"chart checks passed: {len(scenarios)} scenarios, "
        f"{len(list((HERE / 'bad').glob('*.yaml')))} bad values refused{accepted}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
