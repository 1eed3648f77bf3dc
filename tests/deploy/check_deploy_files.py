#!/usr/bin/python3
"""Static checks of deploy/ without a Docker engine or systemd.

Parses both Dockerfiles and the compose file and checks them against the source tree and a
real build: stages, COPY sources, the targets built, the build packages against scripts/setup,
the CPU runtime packages against what `ldd` finds in the binaries, the install layout the
runtime stages copy from, and the compose services' volumes, health checks and flags. Checks
that every flag the example env files mention exists in the binary it is meant for.

Environment (set by ctest): FTUNE_SOURCE_DIR, FTUNE_BIN_DIR (build/bin of a full build).
"""
import fnmatch
import json
import os
import re
import shlex
import subprocess
import tempfile
import unittest

import yaml

SOURCE = os.environ.get("FTUNE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SOURCE = os.path.abspath(SOURCE)
BIN_DIR = os.environ.get("FTUNE_BIN_DIR", os.path.join(SOURCE, "build", "bin"))
BUILD_DIR = os.path.dirname(os.path.abspath(BIN_DIR))
DOCKER = os.path.join(SOURCE, "deploy", "docker")
BINARIES = ["ftcontroller", "ftworker", "ftserve", "ftctl"]

# The scripts/setup packages a build needs: every -dev library and the build tools. Other
# packages there are for tests and demos (python3-torch, sox, openssl, ...).
BUILD_TOOLS = {"cmake", "g++", "make", "pkg-config", "protobuf-compiler",
               "protobuf-compiler-grpc"}
TEST_ONLY_DEV = {"libgtest-dev", "libgmock-dev", "libclang-rt-14-dev"}  # the last: scripts/fuzz
# The CUDA image builds against the official libtorch: Debian's libtorch, and the system Gloo
# headers it is built with, do not belong there (libtorch carries its own Gloo).
NOT_FOR_CUDA = {"libtorch-dev", "libgloo-dev"}


# --- Dockerfile parsing -------------------------------------------------------------------

class Stage:
    def __init__(self, image, name):
        self.image = image
        self.name = name
        self.instructions = []  # (KEYWORD, args)

    def args_of(self, keyword):
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(path):
    """Returns (global ARG defaults, [Stage]). Handles continuations and comment lines."""
    logical, current = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.strip().startswith("#"):
                continue  # comments (also inside a continued instruction)
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            if current.strip():
                logical.append(current.strip())
            current = ""
    if current.strip():
        logical.append(current.strip())

    global_args, stages = {}, []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.match(r"^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", args, re.IGNORECASE)
            if not m:
                raise ValueError(f"{path}: cannot parse FROM {args}")
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"{path}: {keyword} before the first FROM")
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def copy_parts(args):
    """COPY args -> (flags dict, sources, dest). Supports the JSON form."""
    flags = {}
    words = shlex.split(args) if not args.lstrip().startswith("[") else None
    if words is None:
        # JSON form may follow flags: COPY --from=x ["a", "b"]
        m = re.match(r"^((?:--\S+\s+)*)(\[.*\])$", args)
        flag_words = m.group(1).split()
        words = flag_words + json.loads(m.group(2))
    rest = []
    for w in words:
        if w.startswith("--") and not rest:
            k, _, v = w[2:].partition("=")
            flags[k] = v
        else:
            rest.append(w)
    return flags, rest[:-1], rest[-1]


def apt_packages(run_args):
    """Package names after `apt-get install` in a RUN (options and shell syntax dropped)."""
    packages = []
    for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|\|\||$)", run_args):
        for word in m.group(1).split():
            if not word.startswith("-") and re.match(r"^[a-z0-9][a-z0-9+.\-]+$", word):
                packages.append(word)
    return packages


def stage_packages(stage):
    return [p for run in stage.args_of("RUN") for p in apt_packages(run)]


# --- source tree --------------------------------------------------------------------------

def tracked_files():
    """Files a clean clone has (the build context on a user's machine)."""
    try:
        out = subprocess.run(["git", "-C", SOURCE, "ls-files", "-co", "--exclude-standard"],
                             check=True, capture_output=True, text=True).stdout
        return {line for line in out.splitlines() if line}
    except (OSError, subprocess.CalledProcessError):
        files = set()
        for root, _, names in os.walk(SOURCE):
            for n in names:
                files.add(os.path.relpath(os.path.join(root, n), SOURCE))
        return files


def dockerignore_patterns(dockerfile):
    path = dockerfile + ".dockerignore"
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def ignored(relpath, patterns):
    first = relpath.split("/")[0]
    for p in patterns:
        p = p.rstrip("/")
        if p.startswith("**/"):
            if any(fnmatch.fnmatch(part, p[3:]) for part in relpath.split("/")):
                return True
        elif fnmatch.fnmatch(relpath, p) or fnmatch.fnmatch(first, p):
            return True
    return False


def top_level_subdirs():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        text = f.read()
    return re.findall(r"^\s*add_subdirectory\((\w+)\)", text, re.MULTILINE)


def installed_targets():
    """Targets with an install(TARGETS ...) rule anywhere in the source tree."""
    targets = set()
    for rel in tracked_files():
        if os.path.basename(rel) != "CMakeLists.txt" or rel.startswith("build"):
            continue
        path = os.path.join(SOURCE, rel)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for m in re.finditer(r"install\(\s*TARGETS\s+([^)]*?)(?:\s+[A-Z_]+\s|\))",
                                 f.read()):
                targets.update(m.group(1).split())
    return targets


def setup_packages():
    with open(os.path.join(SOURCE, "scripts", "setup")) as f:
        text = f.read()
    block = re.search(r"^PACKAGES=\((.*?)^\)", text, re.MULTILINE | re.DOTALL).group(1)
    words = []
    for line in block.splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)


# --- dpkg ---------------------------------------------------------------------------------

def dpkg_status():
    """{package: {"depends": [[alternatives]], "priority": str, "essential": bool}}."""
    packages, fields = {}, {}

    def flush():
        if fields.get("Package") and "installed" in fields.get("Status", ""):
            deps = []
            for key in ("Pre-Depends", "Depends"):
                for group in filter(None, (g.strip() for g in fields.get(key, "").split(","))):
                    deps.append([re.sub(r"[\s(:].*", "", alt.strip()) for alt in group.split("|")])
            for virtual in (p.strip() for p in fields.get("Provides", "").split(",")):
                if virtual:
                    provides.setdefault(re.sub(r"[\s(].*", "", virtual), []).append(
                        fields["Package"])
            packages[fields["Package"]] = {
                "depends": deps, "priority": fields.get("Priority", ""),
                "essential": fields.get("Essential", "") == "yes"}

    provides = {}
    key = None
    with open("/var/lib/dpkg/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                flush()
                fields, key = {}, None
            elif line[0] in " \t":
                if key:
                    fields[key] += " " + line.strip()
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    flush()
    return packages, provides


def closure(roots, packages, provides):
    """Packages apt would install for `roots`: each Depends group by its first alternative
    (what apt picks), a virtual one by its installed providers."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in packages:
            todo += provides.get(name, [])
            continue
        for group in packages[name]["depends"]:
            todo.append(group[0])
    return seen


# --- tests --------------------------------------------------------------------------------

class DockerfileChecks:
    """Mixin: checks shared by both Dockerfiles. Subclasses set FILE."""
    FILE = None

    @classmethod
    def setUpClass(cls):
        cls.path = os.path.join(DOCKER, cls.FILE)
        cls.global_args, cls.stages = parse_dockerfile(cls.path)
        cls.by_name = {s.name: s for s in cls.stages}

    def test_has_build_and_runtime_stages_runtime_last(self):
        self.assertEqual([s.name for s in self.stages], ["build", "runtime"])

    def test_base_image_args_have_defaults(self):
        for stage in self.stages:
            for var in re.findall(r"\$\{?(\w+)\}?", stage.image):
                self.assertTrue(self.global_args.get(var),
                                f"FROM {stage.image}: ARG {var} needs a default before FROM")

    def test_copy_sources_exist_in_a_clean_checkout(self):
        files = tracked_files()
        patterns = dockerignore_patterns(self.path)
        for stage in self.stages:
            for args in stage.args_of("COPY"):
                flags, sources, _ = copy_parts(args)
                if "from" in flags:
                    continue
                for src in sources:
                    rel = os.path.normpath(src).lstrip("./") if src not in (".", "./") else ""
                    matches = [f for f in files if f == rel or f.startswith(rel + "/")
                               or rel == "" or fnmatch.fnmatch(f, rel)]
                    matches = [f for f in matches if not ignored(f, patterns)]
                    self.assertTrue(matches, f"{self.FILE}: COPY {src}: nothing in the "
                                             "build context (tracked and not dockerignored)")

    def test_copy_from_names_an_earlier_stage(self):
        names = []
        for stage in self.stages:
            for args in stage.args_of("COPY"):
                flags, _, _ = copy_parts(args)
                if "from" in flags:
                    self.assertIn(flags["from"], names, f"COPY --from={flags['from']}")
            names.append(stage.name)

    def test_build_stage_copies_every_cmake_subdirectory(self):
        copied = set()
        for args in self.by_name["build"].args_of("COPY"):
            _, sources, _ = copy_parts(args)
            copied.update(os.path.normpath(s) for s in sources)
        self.assertIn("CMakeLists.txt", copied)
        run = " ".join(self.by_name["build"].args_of("RUN"))
        for sub in top_level_subdirs():
            if sub == "tests" and "-DFTUNE_BUILD_TESTS=OFF" in run:
                continue
            self.assertTrue(sub in copied or "." in copied,
                            f"{self.FILE}: top-level add_subdirectory({sub}) is not copied")

    def test_builds_every_installed_target(self):
        run = " ".join(self.by_name["build"].args_of("RUN"))
        m = re.search(r"--target\s+((?:[\w-]+\s*)+)", run)
        self.assertIsNotNone(m, "the build stage names its targets with --target")
        built = set(m.group(1).split())
        self.assertEqual(installed_targets() - built, set(),
                         "targets with install() rules the image does not build")

    def test_build_stage_installs_what_setup_installs(self):
        needed = {p for p in setup_packages()
                  if p.endswith("-dev") or p in BUILD_TOOLS} - TEST_ONLY_DEV
        if self.FILE.endswith(".cuda"):
            needed -= NOT_FOR_CUDA
        missing = needed - set(stage_packages(self.by_name["build"]))
        self.assertEqual(missing, set(), "scripts/setup packages the build stage lacks")

    def test_runtime_stage_has_no_build_tools(self):
        for p in stage_packages(self.by_name["runtime"]):
            self.assertFalse(p.endswith("-dev") or p in {"g++", "gcc", "cmake", "make"},
                             f"runtime stage installs {p}")

    def test_runtime_copies_what_the_install_produces(self):
        """Installs the real build as the build stage does (prefix /usr, DESTDIR=/out) and
        checks each COPY --from=build source exists in it."""
        run = " ".join(self.by_name["build"].args_of("RUN"))
        self.assertIn("-DCMAKE_INSTALL_PREFIX=/usr", run)
        self.assertIn("DESTDIR=/out cmake --install", run)
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", "/usr"],
                                    env=dict(os.environ, DESTDIR=out),
                                    capture_output=True, text=True)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            for args in self.by_name["runtime"].args_of("COPY"):
                flags, sources, _ = copy_parts(args)
                for src in sources:
                    if flags.get("from") != "build" or not src.startswith("/out/"):
                        continue
                    if src == "/out/runtime-packages.txt":
                        self.assertIn("> /out/runtime-packages.txt", run)
                        continue
                    self.assertTrue(os.path.exists(os.path.join(out, src[len("/out/"):])),
                                    f"COPY --from=build {src}: the install does not make it")
            for b in BINARIES:
                self.assertTrue(os.access(os.path.join(out, "usr/bin", b), os.X_OK), b)

    def test_default_command_is_an_installed_binary(self):
        cmd = self.by_name["runtime"].args_of("CMD")
        self.assertTrue(cmd)
        self.assertIn(json.loads(cmd[-1])[0], installed_targets())


class CpuDockerfileTest(DockerfileChecks, unittest.TestCase):
    FILE = "Dockerfile"

    def test_base_is_debian_12(self):
        self.assertEqual(self.global_args.get("BASE_IMAGE"), "debian:12")

    def test_runtime_packages_cover_every_linked_library(self):
        """Every package owning a library ldd finds in the binaries is installed by the runtime
        stage: named, pulled in by a named package's Depends, or in the base image."""
        script = os.path.join(DOCKER, "runtime-packages")
        binaries = [os.path.join(BIN_DIR, b) for b in BINARIES]
        result = subprocess.run([script] + binaries, capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        needed = set(result.stdout.split())
        self.assertIn("libc6", needed)  # the script really resolved something

        packages, provides = dpkg_status()
        named = stage_packages(self.by_name["runtime"])
        for p in named:
            self.assertTrue(p in packages or p in provides or self._apt_knows(p),
                            f"runtime stage names unknown package {p}")
        base = closure([p for p, v in packages.items()
                        if v["priority"] == "required" or v["essential"]], packages, provides)
        have = closure(named, packages, provides) | base
        self.assertEqual(needed - have, set(),
                         "packages owning linked libraries that the runtime stage lacks")

    def test_runtime_names_openblas(self):
        # libtorch's Depends prefers the reference BLAS; apt takes OpenBLAS only when named.
        self.assertIn("libopenblas0-pthread", stage_packages(self.by_name["runtime"]))

    @staticmethod
    def _apt_knows(package):
        return subprocess.run(["apt-cache", "show", "--no-all-versions", package],
                              capture_output=True).returncode == 0


class CudaDockerfileTest(DockerfileChecks, unittest.TestCase):
    FILE = "Dockerfile.cuda"
    BUILD_ARGS = ["CUDA_DEVEL_IMAGE", "RUNTIME_IMAGE", "LIBTORCH_URL", "LIBTORCH_SHA256"]

    def test_build_args_are_declared_and_documented(self):
        declared = set(self.global_args)
        for stage in self.stages:
            declared.update(a.partition("=")[0] for a in stage.args_of("ARG"))
        with open(os.path.join(SOURCE, "deploy", "README.md")) as f:
            readme = f.read()
        for arg in self.BUILD_ARGS:
            self.assertIn(arg, declared)
            self.assertIn(arg, readme, f"deploy/README.md does not document {arg}")

    def test_libtorch_default_is_a_cxx11_abi_cuda_build(self):
        url = next(a.partition("=")[2] for a in self.by_name["build"].args_of("ARG")
                   if a.startswith("LIBTORCH_URL="))
        self.assertRegex(url, r"^https://download\.pytorch\.org/libtorch/cu\d+/"
                              r"libtorch-cxx11-abi-shared-with-deps-[\d.]+%2Bcu\d+\.zip$")
        cu = re.search(r"/cu(\d\d)\d*/", url).group(1)  # CUDA major, e.g. 12
        self.assertIn(f"cuda:{cu}.", self.global_args["CUDA_DEVEL_IMAGE"],
                      "libtorch and the CUDA image disagree on the CUDA major version")

    def test_builds_against_the_downloaded_libtorch(self):
        run = " ".join(self.by_name["build"].args_of("RUN"))
        self.assertIn("-DCMAKE_PREFIX_PATH=/opt/libtorch", run)
        self.assertIn("unzip -q /tmp/libtorch.zip -d /opt", run)

    def test_runtime_has_libtorch_and_the_derived_packages(self):
        runtime = self.by_name["runtime"]
        copies = [copy_parts(a) for a in runtime.args_of("COPY")]
        self.assertTrue(any(f.get("from") == "build" and "/opt/libtorch/lib/" in s
                            for f, s, _ in copies))
        self.assertIn("xargs -a /tmp/runtime-packages.txt apt-get install",
                      " ".join(runtime.args_of("RUN")))
        envs = " ".join(runtime.args_of("ENV"))
        self.assertIn("NVIDIA_VISIBLE_DEVICES", envs)
        self.assertIn("NVIDIA_DRIVER_CAPABILITIES=compute", envs)


class RuntimePackagesScriptTest(unittest.TestCase):
    def test_names_the_owner_of_libc_and_skips_unowned_libraries(self):
        result = subprocess.run([os.path.join(DOCKER, "runtime-packages"),
                                 os.path.join(BIN_DIR, "ftctl")], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("libc6", result.stdout.split())
        self.assertIn("libstdc++6", result.stdout.split())

    def test_fails_on_an_unresolvable_library(self):
        with tempfile.TemporaryDirectory() as tmp:
            exe = os.path.join(tmp, "needs_missing")
            src = os.path.join(tmp, "lib.c")
            with open(src, "w") as f:
                f.write("int f(void) { return 1; }\n")
            lib = os.path.join(tmp, "libftunegone.so")
            subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src], check=True)
            main = os.path.join(tmp, "main.c")
            with open(main, "w") as f:
                f.write("int f(void); int main(void) { return f(); }\n")
            subprocess.run(["gcc", "-o", exe, main, "-L" + tmp, "-lftunegone"], check=True)
            os.remove(lib)
            result = subprocess.run([os.path.join(DOCKER, "runtime-packages"), exe],
                                    capture_output=True, text=True)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("not found: libftunegone.so", result.stderr)


def help_text(binary, subcommand=None):
    argv = [os.path.join(BIN_DIR, binary)] + ([subcommand] if subcommand else []) + ["--help"]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def flag_in_help(flag, text):
    return re.search(r"(^|[\s,])" + re.escape(flag) + r"(?=[\s=,]|$)", text, re.MULTILINE)


def listen_port(command):
    if "--listen" in command:
        return command[command.index("--listen") + 1].rsplit(":", 1)[1]
    return None


def http_port(command):
    if "--http-listen" in command:
        return command[command.index("--http-listen") + 1].rsplit(":", 1)[1]
    return None


def load_compose():
    with open(os.path.join(DOCKER, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    # ftune's own services run ftune's images; the rest (Prometheus, Grafana) are upstream's.
    ftune = {name: s for name, s in compose["services"].items()
             if s.get("image", "").startswith("ftune:")}
    return compose, ftune


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.compose, cls.services = load_compose()

    def mounts(self, service):
        """{container path: (source, read_only)} from the short volume syntax."""
        result = {}
        for v in self.services[service].get("volumes", []):
            v = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", v)  # ${VAR:-default} -> default
            parts = v.split(":")
            result[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
        return result

    def test_services(self):
        self.assertLessEqual({"controller", "worker", "serve", "worker-gpu"}, set(self.services))
        self.assertLessEqual({"prometheus", "grafana"}, set(self.compose["services"]))
        self.assertEqual(self.services["worker-gpu"].get("profiles"), ["gpu"])
        # ftserve refuses to start without a model: not part of the default `up`.
        self.assertEqual(self.services["serve"].get("profiles"), ["serve"])

    def test_builds_exist_and_every_image_is_built(self):
        built = {}
        for name, s in self.services.items():
            if "build" in s:
                context = os.path.normpath(os.path.join(DOCKER, s["build"]["context"]))
                self.assertEqual(context, SOURCE, f"{name}: build context is the repo root")
                self.assertTrue(os.path.exists(os.path.join(context, s["build"]["dockerfile"])))
                built[s["image"]] = s["build"]["dockerfile"]
        for name, s in self.services.items():
            self.assertIn(s["image"], built, f"{name}: image {s['image']} is built by no service")
        self.assertEqual(built["ftune:cpu"], "deploy/docker/Dockerfile")
        self.assertEqual(built["ftune:cuda"], "deploy/docker/Dockerfile.cuda")

    def test_commands_run_installed_binaries(self):
        for name, s in self.services.items():
            self.assertIn(s["command"][0], installed_targets(), name)

    def test_every_service_has_a_health_check_on_its_own_port(self):
        for name, s in self.services.items():
            test = s.get("healthcheck", {}).get("test")
            self.assertTrue(test and test[0] == "CMD", f"{name}: exec-form healthcheck")
            port = listen_port(s["command"])
            self.assertIsNotNone(port, f"{name}: --listen is needed for a health check")
            self.assertIn(f"/127.0.0.1/{port}", " ".join(test), name)

    def test_controller_database_is_a_named_volume(self):
        cmd = self.services["controller"]["command"]
        data_dir = cmd[cmd.index("--data-dir") + 1]
        source, ro = self.mounts("controller")[data_dir]
        self.assertIn(source, self.compose["volumes"])
        self.assertFalse(ro)

    def test_workers_read_datasets_and_write_checkpoints_under_allowed_roots(self):
        for name in ("worker", "worker-gpu"):
            cmd = self.services[name]["command"]
            roots = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--allowed-root"]
            mounts = self.mounts(name)
            datasets = mounts["/var/lib/ftune/datasets"]
            checkpoints = mounts["/var/lib/ftune/checkpoints"]
            self.assertTrue(datasets[1], f"{name}: datasets read-only")
            self.assertFalse(checkpoints[1], f"{name}: checkpoints writable")
            self.assertIn(checkpoints[0], self.compose["volumes"])
            self.assertEqual(set(roots), {"/var/lib/ftune/datasets", "/var/lib/ftune/checkpoints"})
            self.assertEqual(
                self.services[name]["depends_on"]["controller"]["condition"], "service_healthy")
            controller = cmd[cmd.index("--controller") + 1]
            self.assertEqual(controller,
                             "controller:" + listen_port(self.services["controller"]["command"]))
            grace = self.services[name]["stop_grace_period"]
            self.assertRegex(grace, r"^\d+m$")
            self.assertGreaterEqual(int(grace[:-1]), 5, f"{name}: time to checkpoint on stop")

    def test_serve_reads_its_model_from_the_checkpoints_volume(self):
        self.assertEqual(self.mounts("serve")["/var/lib/ftune/checkpoints"],
                         ("checkpoints", True))
        cmd = self.services["serve"]["command"]
        model = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", cmd[cmd.index("--model") + 1])
        self.assertTrue(model.startswith("/var/lib/ftune/checkpoints/"), model)

    def test_gpu_worker_reserves_a_gpu(self):
        devices = self.services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
        self.assertEqual(devices[0]["driver"], "nvidia")
        self.assertIn("gpu", devices[0]["capabilities"])
        cmd = self.services["worker-gpu"]["command"]
        self.assertEqual(cmd[cmd.index("--devices") + 1], "cuda:" + devices[0]["device_ids"][0])

    def test_flags_are_known_to_the_binaries(self):
        """Every --flag a compose command passes appears in that binary's --help."""
        unknown = []
        for name, s in self.services.items():
            cmd = s["command"]
            out = help_text(cmd[0], cmd[1] if cmd[0] == "ftworker" else None)
            unknown += [f"{name}: {cmd[0]} {flag}" for flag in cmd
                        if flag.startswith("--") and not flag_in_help(flag, out)]
        self.assertFalse(unknown, "flags the binaries' --help does not list:\n  "
                         + "\n  ".join(unknown))


# Metric names the C++ code registers ("ftune_..." string literals).
def exported_metrics():
    names = set()
    for rel in tracked_files():
        if rel.startswith(("server/", "worker/", "common/")) and rel.endswith(".cc"):
            with open(os.path.join(SOURCE, rel)) as f:
                names.update(re.findall(r'"(ftune_[a-z0-9_]+)"', f.read()))
    return names


class MonitoringTest(unittest.TestCase):
    """Prometheus and Grafana beside ftune in docker-compose.yml."""

    @classmethod
    def setUpClass(cls):
        cls.compose, cls.ftune = load_compose()
        cls.prometheus_config = os.path.join(SOURCE, "deploy", "prometheus", "prometheus.yml")
        with open(cls.prometheus_config) as f:
            cls.prometheus = yaml.safe_load(f)
        cls.dashboard_path = os.path.join(SOURCE, "deploy", "grafana", "dashboards", "ftune.json")
        with open(cls.dashboard_path) as f:
            cls.dashboard = json.load(f)

    def mount_sources(self, service):
        """{container path: host path} of the bind mounts (relative to the compose file)."""
        result = {}
        for v in self.compose["services"][service].get("volumes", []):
            source, target = v.split(":")[:2]
            if source.startswith("."):
                result[target] = os.path.normpath(os.path.join(DOCKER, source))
        return result

    def test_every_ftune_service_serves_http_and_is_scraped(self):
        targets = {t for job in self.prometheus["scrape_configs"]
                   for group in job.get("static_configs", []) for t in group["targets"]}
        expected = set()
        for name, service in self.ftune.items():
            port = http_port(service["command"])
            self.assertIsNotNone(port, f"{name}: no --http-listen, so no /metrics")
            expected.add(f"{name}:{port}")
        self.assertEqual(targets, expected)

    def test_promtool_accepts_the_config(self):
        result = subprocess.run(["/usr/bin/promtool", "check", "config", self.prometheus_config],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_mounted_files_exist(self):
        prometheus = self.mount_sources("prometheus")
        self.assertEqual(prometheus["/etc/prometheus/prometheus.yml"], self.prometheus_config)
        grafana = self.mount_sources("grafana")
        provisioning = grafana["/etc/grafana/provisioning"]
        with open(os.path.join(provisioning, "dashboards", "ftune.yml")) as f:
            provider = yaml.safe_load(f)["providers"][0]
        self.assertEqual(grafana[provider["options"]["path"]], os.path.dirname(self.dashboard_path))
        with open(os.path.join(provisioning, "datasources", "prometheus.yml")) as f:
            datasource = yaml.safe_load(f)["datasources"][0]
        self.assertEqual(datasource["url"], "http://prometheus:9090")
        for panel in self.dashboard["panels"]:
            if panel["type"] != "row":
                self.assertEqual(panel["datasource"]["uid"], datasource["uid"], panel["title"])

    def test_dashboard_charts_only_exported_metrics(self):
        exported = exported_metrics()
        self.assertIn("ftune_serve_requests_total", exported)  # the scan found the code
        used = set()
        for panel in self.dashboard["panels"]:
            for target in panel.get("targets", []):
                used.update(re.findall(r"\b(ftune_[a-z0-9_]+)", target["expr"]))
        self.assertTrue(used)
        unknown = {m for m in used if m not in exported
                   and re.sub(r"_(bucket|sum|count)$", "", m) not in exported}
        self.assertEqual(unknown, set(), "dashboard queries of metrics no binary exports")


class ExampleConfigTest(unittest.TestCase):
    """The env files installed to etc/ftune: flags in their *_OPTS and *_MODELS values, set or
    in commented examples, are flags of the binary that reads them."""
    FILES = {"ftcontroller.env": ("ftcontroller", None), "ftworker.env": ("ftworker", "run"),
             "ftserve.env": ("ftserve", None)}

    def test_flags_in_examples_exist(self):
        unknown = []
        for file, (binary, sub) in self.FILES.items():
            out = help_text(binary, sub)
            with open(os.path.join(SOURCE, "deploy", "config", file)) as f:
                for line in f:
                    m = re.match(r"^#?\s*(FT\w+_(?:OPTS|MODELS))=(.*)$", line.strip())
                    if not m:
                        continue
                    unknown += [f"{file} {m.group(1)}: {binary} {flag}"
                                for flag in re.findall(r"(?<!\S)--[a-z][a-z0-9-]*", m.group(2))
                                if not flag_in_help(flag, out)]
            # ... and the unit passes the variables this file sets.
            with open(os.path.join(SOURCE, "deploy", "systemd",
                                   ("ftworker@" if binary == "ftworker" else binary)
                                   + ".service.in")) as f:
                unit = f.read()
            with open(os.path.join(SOURCE, "deploy", "config", file)) as f:
                for var in re.findall(r"^#?(FT\w+)=", f.read(), re.MULTILINE):
                    self.assertIn(var, unit, f"{file} sets {var}, which the unit never reads")
        unknown = sorted(set(unknown))
        self.assertFalse(unknown, "flags the binaries' --help does not list:\n  "
                         + "\n  ".join(unknown))


if __name__ == "__main__":
    unittest.main(verbosity=2)
