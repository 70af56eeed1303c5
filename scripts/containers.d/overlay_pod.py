#!/usr/bin/env python3
"""Turns a rendered Kustomize overlay into the `docker run` of its `spacet`
Deployment's container, as the kubelet would run it (scripts/containers).

    overlay_pod.py RENDERED.yaml ENV_FILE ARGS_FILE [--secret K=V]... [--set K=V]...

Reads the Deployment `spacet` and what it references; writes ENV_FILE (the
container's environment: its ConfigMap(s) and Secret(s) by `envFrom`, then its
`env`) and ARGS_FILE (one `docker run` argument a line: user, read-only root,
capabilities, no-new-privileges, memory limit, each emptyDir as a Docker volume
at its mount path, then the image and its args). Prints on stdout
`volume=NAME` for each Docker volume the caller must create (empty, mode 0777),
`http_port=N` (the container's port named http), `rendered_image=IMAGE` and
`placeholders=K1,K2` (the settings still holding a `REPLACE_ME` placeholder).

--secret gives the Secret values the cluster would hold (the repository keeps
none). --set replaces one setting that points outside the test's machine (the
issuer, the Pub/Sub endpoint, the SpaceX API); each replacement is printed on
stderr. Anything in the Deployment this script cannot reproduce (other volume
kinds, env from fields, a container command) fails loudly instead of being
skipped.
"""
import argparse
import sys

import yaml

PLACEHOLDER = "REPLACE_ME"


def fail(message):
    print(f"overlay_pod: {message}", file=sys.stderr)
    sys.exit(1)


def pairs(values, what):
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def memory_bytes(quantity):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(quantity[: -len(unit)]) * factor
    return int(quantity)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered")
    parser.add_argument("env_file")
    parser.add_argument("args_file")
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--image", help="the local image to run instead of the rendered name")
    parser.add_argument("--volume-prefix", default="spacet-", help="prefix of the Docker volumes made for emptyDirs")
    options = parser.parse_args()
    secrets = pairs(options.secret, "--secret")
    overrides = pairs(options.set, "--set")

    with open(options.rendered, encoding="utf-8") as f:
        objects = [o for o in yaml.safe_load_all(f) if o]

    def find(kind, name):
        for o in objects:
            if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
                return o
        return None

    deployment = find("Deployment", "spacet") or fail("no Deployment spacet")
    pod = deployment["spec"]["template"]["spec"]
    containers = pod["containers"]
    container = next((c for c in containers if c["name"] == "spacet"), None) or fail("no container spacet")
    if pod.get("initContainers"):
        fail("init containers are not reproduced")
    if container.get("command"):
        fail("a container command is not reproduced")

    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            config = find("ConfigMap", name) or fail(f"envFrom names ConfigMap {name}, which the overlay lacks")
            env.update({k: str(v) for k, v in config.get("data", {}).items()})
        elif "secretRef" in source:
            if find("Secret", source["secretRef"]["name"]):
                fail("the overlay ships a Secret: secrets are created out of band")
            env.update(secrets)
        else:
            fail(f"unsupported envFrom {source}")
    for item in container.get("env", []):
        if "value" not in item:
            fail(f"env {item['name']} is not a plain value")
        env[item["name"]] = str(item["value"])
    for key, value in overrides.items():
        print(f"overlay_pod: {key}: {env.get(key, '(unset)')!r} -> {value!r}", file=sys.stderr)
        env[key] = value
    for key, value in env.items():
        if "\n" in value:
            fail(f"{key} holds a newline, which an env file cannot carry")

    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    user = security.get("runAsUser")
    if security.get("runAsNonRoot") and not user:
        fail("runAsNonRoot without runAsUser: the image's USER would decide")
    args = []
    if user is not None:
        args += ["--user", f"{user}:{security.get('runAsGroup', user)}"]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if security.get("privileged"):
        fail("a privileged container")
    capabilities = security.get("capabilities", {})
    for cap in capabilities.get("drop", []):
        args += ["--cap-drop", cap]
    for cap in capabilities.get("add", []):
        args += ["--cap-add", cap]
    seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp != "RuntimeDefault":
        fail(f"seccompProfile {seccomp} (Docker runs its default profile, as RuntimeDefault)")
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        args += ["--memory", str(memory_bytes(memory))]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    docker_volumes = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"]) or fail(f"volumeMount {mount['name']} names no volume")
        if "emptyDir" not in volume:
            fail(f"volume {mount['name']} is not an emptyDir")
        # An emptyDir is a fresh, empty, world-writable (0777) directory. Docker's
        # tmpfs over a directory the image has takes that directory's mode (0700)
        # and root as owner, which no emptyDir does: a fresh Docker volume made
        # 0777 by the caller (the `volume=` lines) and mounted without copying
        # the image's directory into it is the same thing. (sizeLimit is not
        # enforced on it.)
        name = f"{options.volume_prefix}{mount['name']}"
        docker_volumes.append(name)
        args += ["--mount", f"type=volume,src={name},dst={mount['mountPath']},volume-nocopy"]

    image = options.image or container["image"]
    args.append(image)
    args += [str(a) for a in container.get("args", [])]

    with open(options.env_file, "w", encoding="utf-8") as f:
        for key, value in sorted(env.items()):
            f.write(f"{key}={value}\n")
    with open(options.args_file, "w", encoding="utf-8") as f:
        for arg in args:
            f.write(arg + "\n")

    http = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "http"), None)
    if http is None:
        fail("the container has no port named http")
    for name in docker_volumes:
        print(f"volume={name}")
    print(f"http_port={http}")
    print(f"rendered_image={container['image']}")
    print("placeholders=" + ",".join(k for k, v in sorted(env.items()) if v.strip().startswith(PLACEHOLDER)))


main()
