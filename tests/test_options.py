"""Options: defaults, environment fallbacks, one-line errors."""

from __future__ import annotations

import io
import os
import re
import sys

from twisted.trial.unittest import SynchronousTestCase

from eventpipe.config.convert import parse_size
from eventpipe.config.options import Options
from eventpipe.config.table import PARAMETERS


def parse(args: list[str], environ: dict[str, str] | None = None) -> Options:
    options = Options(environ=environ or {})
    options.parseOptions(args)
    return options


class UnknownSettingTests(SynchronousTestCase):
    def error(self, args: list[str], environ: dict[str, str]) -> str:
        return OptionTests.error(self, args, environ)  # type: ignore[arg-type]

    def test_misspelled_settings_stop_start_up(self) -> None:
        """
        An EVENTPIPE_ variable that is no setting (in the environment, as a
        unit's EnvironmentFile= or docker --env-file puts it), or any key of
        an env file that is none, stops start-up with one line naming the
        nearest setting; a near miss of a short name is warned about.
        """
        self.assertIn(
            "EVENTPIPE_S3_BUCKT (in the environment) is not a setting of eventpipe "
            "(did you mean EVENTPIPE_S3_BUCKET?)",
            self.error([], {"EVENTPIPE_S3_BUCKT": "acm-events"}),
        )
        self.assertIn(
            "EVENTPIPE_S3_ENDPOINT (in the environment) is not a setting of eventpipe "
            "(did you mean EVENTPIPE_S3_ENDPOINT_URL?)",
            self.error([], {"EVENTPIPE_S3_ENDPOINT": "http://127.0.0.1:9000"}),
        )
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("S3_BUCKT=acm-events\n")
        self.assertIn(
            f"{path}: S3_BUCKT is not a setting of eventpipe (did you mean S3_BUCKET?)",
            self.error([f"--env-file={path}"], {}),
        )
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = parse([], {"S3_BUCKT": "acm-events", "HOME": "/root", "TZ": "UTC"})
        self.assertIsNone(options["s3-bucket"])
        self.assertEqual(
            stderr.getvalue(),
            "eventpipe: warning: S3_BUCKT (in the environment) is not a setting of eventpipe "
            "(did you mean S3_BUCKET?); it is ignored\n",
        )

    def test_every_setting_has_its_eventpipe_name(self) -> None:
        """Each setting's first variable is EVENTPIPE_ and its name; short ones stay aliases."""
        for parameter in PARAMETERS:
            self.assertEqual(
                parameter.environment[0],
                "EVENTPIPE_" + parameter.name.upper().replace("-", "_"),
            )
        options = parse([], {"EVENTPIPE_S3_BUCKET": "acm-events", "ROTATION_INTERVAL": "30"})
        self.assertEqual((options["s3-bucket"], options["rotation-interval"]), ("acm-events", 30))
        self.assertEqual(options.sources["s3-bucket"], "EVENTPIPE_S3_BUCKET")


class ReferenceTests(SynchronousTestCase):
    def test_every_option_and_variable_in_the_reference(self) -> None:
        """
        The manual's option reference (made from the parser, included by
        docs/options.rst and the man page) has an entry for every option,
        naming each of its variables.
        """
        from eventpipe.config.reference import option_reference

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for page in ("options.rst", os.path.join("man", "eventpipe.rst")):
            with open(os.path.join(root, "docs", page), encoding="utf-8") as stream:
                self.assertIn("_generated/options.rst", stream.read(), page)
        lines = option_reference().splitlines()
        rows = {
            match.group(1): lines[number + 1]
            for number, line in enumerate(lines)
            if (match := re.match(r"^``--([a-z0-9-]+)", line))
        }
        for parameter in PARAMETERS:
            self.assertIn(parameter.name, rows, f"--{parameter.name}")
            for variable in parameter.environment:
                self.assertIn(variable, rows[parameter.name], f"--{parameter.name}")
        for flag, variable in (
            ("repair-acm-tag-names", "EVENTPIPE_REPAIR_ACM_TAG_NAMES"),
            ("allow-unconditional-writes", "EVENTPIPE_ALLOW_UNCONDITIONAL_WRITES"),
        ):
            self.assertIn(variable, rows[flag])


class OptionTests(SynchronousTestCase):
    def error(self, args: list[str], environ: dict[str, str] | None = None) -> str:
        """Parse, expecting a one-line error and exit status 1."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        exit = self.assertRaises(SystemExit, parse, args, environ)
        self.assertEqual(exit.code, 1)
        message = stderr.getvalue()
        self.assertEqual(message.count("\n"), 1, message)
        self.assertNotIn("Traceback", message)
        return message

    def test_defaults(self) -> None:
        options = parse([])
        self.assertEqual(options["listen"], ["tcp:8080"])
        self.assertEqual(options["spool-dir"], "./eventpipe-spool")
        self.assertEqual(options["rotation-interval"], 60.0)
        self.assertEqual(options["max-file-size"], 5 * 2**20)
        self.assertEqual(options["check-interval"], 10.0)
        self.assertEqual(options["format"], "xml")
        self.assertEqual(options["outbox"], os.path.join("./eventpipe-spool", "outbox"))
        self.assertEqual(options["event-tag"], "EVENT")
        self.assertEqual(options["max-event-size"], 2**20)
        self.assertEqual(options["shutdown-timeout"], 30.0)
        self.assertEqual(options["fsync"], "seal")
        self.assertIsNone(options["s3-bucket"])
        self.assertTrue(options["instance-id"])

    def test_environment(self) -> None:
        env = {
            "EVENTPIPE_LISTEN": "tcp:1000, tcp:1001",
            "EVENTPIPE_SPOOL_DIR": "/tmp/s",
            "ROTATION_INTERVAL": "5",
            "MAX_FILE_SIZE": "5MB",
            "CHECK_INTERVAL": "0.5",
            "OUTPUT_FORMAT": "json",
            "EVENTPIPE_INSTANCE_ID": "gw-2",
            "EVENTPIPE_MAX_EVENT_SIZE": "512KiB",
            "BUCKET_NAME": "bkt",
            "S3_PREFIX": "acm",
        }
        options = parse([], env)
        self.assertEqual(options["listen"], ["tcp:1000", "tcp:1001"])
        self.assertEqual(options["spool-dir"], "/tmp/s")
        self.assertEqual(options["outbox"], "/tmp/s/outbox")
        self.assertEqual(options["rotation-interval"], 5.0)
        self.assertEqual(options["max-file-size"], 5_000_000)
        self.assertEqual(options["check-interval"], 0.5)
        self.assertEqual(options["format"], "json")
        self.assertEqual(options["instance-id"], "gw-2")
        self.assertEqual(options["max-event-size"], 512 * 1024)
        self.assertEqual(options["s3-bucket"], "bkt")
        self.assertEqual(options["s3-prefix"], "acm/")

    def test_command_line_beats_environment(self) -> None:
        options = parse(
            ["--rotation-interval=7", "--listen=tcp:2000", "--s3-bucket=xxx"],
            {
                "ROTATION_INTERVAL": "5",
                "EVENTPIPE_PORT": "3000",
                "S3_BUCKET": "yyy",
                "BUCKET_NAME": "zzz",
            },
        )
        self.assertEqual(options["rotation-interval"], 7.0)
        self.assertEqual(options["listen"], ["tcp:2000"])
        self.assertEqual(options["s3-bucket"], "xxx")
        self.assertEqual(parse([], {"S3_BUCKET": "yyy", "BUCKET_NAME": "zzz"})["s3-bucket"], "yyy")

    def test_port(self) -> None:
        self.assertEqual(parse([], {"EVENTPIPE_PORT": "9000"})["listen"], ["tcp:9000"])
        self.assertIn("EVENTPIPE_PORT", self.error([], {"EVENTPIPE_PORT": "http"}))

    def test_ambient_names_ignored(self) -> None:
        """
        PORT and PREFIX, set by build tools and shells for their own ends,
        never move the listener or the keys.
        """
        options = parse([], {"PORT": "3000", "PREFIX": "/usr/local"})
        self.assertEqual(options["listen"], ["tcp:8080"])
        self.assertEqual(options["s3-prefix"], "")
        self.assertEqual(
            parse([], {"EVENTPIPE_S3_PREFIX": "acm", "S3_BUCKET": "b1b"})["s3-prefix"], "acm/"
        )

    def test_destination_details(self) -> None:
        """
        A detail without its destination is refused, not ignored; an
        endpoint without a scheme, and a prefix that is a pasted URL, are
        refused with what to write.
        """
        for args, environ, words in [
            (["--s3-endpoint-url=http://127.0.0.1:9000"], {}, "--s3-endpoint-url: given without"),
            ([], {"EVENTPIPE_S3_PREFIX": "acm"}, "EVENTPIPE_S3_PREFIX: given without --s3-bucket"),
            (["--azure-prefix=acm"], {}, "--azure-prefix: given without --azure-container"),
            (
                ["--azure-account-url=https://a.blob.core.windows.net"],
                {},
                "given without --azure-container",
            ),
            (
                ["--s3-bucket=acm-events", "--s3-endpoint-url=127.0.0.1:45123"],
                {},
                "--s3-endpoint-url: invalid value '127.0.0.1:45123' (an http:// or https:// URL: "
                "http://127.0.0.1:45123)",
            ),
            (
                ["--s3-bucket=real-bucket", "--s3-prefix=s3://real-bucket/acm/"],
                {},
                "not a URL: use --s3-prefix acm/",
            ),
        ]:
            self.assertIn(words, self.error(args, environ))
        options = parse(["--s3-bucket=acm-events", "--s3-endpoint-url=http://127.0.0.1:9000"])
        self.assertEqual(options["s3-endpoint-url"], "http://127.0.0.1:9000")

    def test_env_file(self) -> None:
        """
        Settings in a KEY=VALUE file; the environment beats it, the command
        line beats both; every non-default value says where it came from.
        """
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write(
                "# eventpipe settings\n"
                "\n"
                "ROTATION_INTERVAL=15\n"
                "export S3_BUCKET='acm-events'\n"
                'EVENTPIPE_S3_PREFIX="acm/site 1"\n'
                "MAX_FILE_SIZE=1MiB\n"
                "EVENTPIPE_ALLOW=10.0.0.0/8,192.0.2.7\n"
                "EVENTPIPE_REPAIR_ACM_TAG_NAMES=yes\n"
            )
        options = parse([f"--env-file={path}", "--max-file-size=2MiB"], {"ROTATION_INTERVAL": "30"})
        self.assertEqual(options["rotation-interval"], 30.0)
        self.assertEqual(options["s3-bucket"], "acm-events")
        self.assertEqual(options["s3-prefix"], "acm/site 1/")
        self.assertEqual(options["max-file-size"], 2 * 2**20)
        self.assertEqual(len(options["allow"]), 2)
        self.assertTrue(options["repair-acm-tag-names"])
        self.assertEqual(options.sources["rotation-interval"], "ROTATION_INTERVAL")
        self.assertEqual(options.sources["s3-bucket"], f"S3_BUCKET in {path}")
        self.assertEqual(options.sources["max-file-size"], "--max-file-size")
        self.assertNotIn("check-interval", options.sources)
        summary = options.summary()
        self.assertIn("max-file-size=2MiB (--max-file-size)", summary)
        self.assertIn(f"s3-bucket=acm-events (S3_BUCKET in {path})", summary)
        self.assertEqual(parse([], {"EVENTPIPE_ENV_FILE": path})["s3-bucket"], "acm-events")

    def test_env_file_errors(self) -> None:
        """A missing file or a line that is not KEY=VALUE: one line each."""
        self.assertIn("--env-file: cannot read", self.error(["--env-file=/no/such/file"]))
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("ROTATION_INTERVAL=5\nthis is not a setting\n")
        self.assertIn("line 2: expected KEY=VALUE", self.error([f"--env-file={path}"]))
        with open(path, "w") as stream:
            stream.write("ROTATION_INTERVAL=soon\n")
        message = self.error([f"--env-file={path}"])
        self.assertIn(f"ROTATION_INTERVAL in {path}: invalid value 'soon'", message)

    def test_bad_values(self) -> None:
        """Each bad value stops start-up with one line naming the option."""
        for args, env, name in [
            (["--rotation-interval=-5"], {}, "--rotation-interval"),
            (["--check-interval=0"], {}, "--check-interval"),
            (["--format=csv"], {}, "--format"),
            (["--max-file-size=5 parsecs"], {}, "--max-file-size"),
            (["--listen=tcp:notaport"], {}, "--listen"),
            (["--listen=carrier-pigeon:1"], {}, "--listen"),
            (["--instance-id=a/b"], {}, "--instance-id"),
            (["--fsync=sometimes"], {}, "--fsync"),
            ([], {"ROTATION_INTERVAL": "soon"}, "ROTATION_INTERVAL"),
            ([], {"EVENTPIPE_LISTEN": "nope"}, "EVENTPIPE_LISTEN"),
            (["--no-such-option"], {}, "no-such-option"),
        ]:
            message = self.error(args, env)
            self.assertIn(name, message)

    def test_written_down_is_used_or_refused_by_name(self) -> None:
        """
        A pasted bucket URL says what to write instead; an outbox that is a
        file is refused; choices take any case and say what they are; an
        unknown key of the env file is named with the nearest known one; a
        check interval longer than the rotation interval is warned about.
        """
        message = self.error(["--s3-bucket=s3://acm-events/acm/"])
        self.assertIn("use --s3-bucket acm-events --s3-prefix acm/", message)
        message = self.error([], {"S3_BUCKET": "https://acm-events.s3.amazonaws.com/acm"})
        self.assertIn("S3_BUCKET: invalid value", message)
        self.assertIn("use --s3-bucket acm-events --s3-prefix acm", message)
        for bad in ("ab", "Acm-Events", "acm..events", "192.168.0.1", "-acm", "acm_events"):
            self.assertIn("--s3-bucket", self.error([f"--s3-bucket={bad}"]))
        self.assertEqual(parse(["--s3-bucket=acm-events.prod"])["s3-bucket"], "acm-events.prod")
        afile = self.mktemp()
        with open(afile, "w") as stream:
            stream.write("not a directory")
        self.assertIn("is a file, not a directory", self.error([f"--outbox={afile}"]))
        options = parse([], {"OUTPUT_FORMAT": "JSON", "EVENTPIPE_LOG_LEVEL": "Debug"})
        self.assertEqual((options["format"], options["log-level"]), ("json", "debug"))
        message = self.error(["--log-level=verbose"])
        self.assertIn("one of debug, info, warn, error", message)
        path = self.mktemp()
        with open(path, "w") as stream:
            stream.write("ROTATON_INTERVAL=5\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")
        self.assertIn(
            "ROTATON_INTERVAL is not a setting of eventpipe (did you mean ROTATION_INTERVAL?)",
            self.error([f"--env-file={path}"]),
        )
        with open(path, "w") as stream:
            stream.write("AWS_SECRET_ACCESS_KEY=s3cr3t\n")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = parse([f"--env-file={path}", "--check-interval=3600", "--rotation-interval=1"])
        warnings = stderr.getvalue()
        self.assertIn("--check-interval 3600 is longer than --rotation-interval 1", warnings)
        self.assertNotIn("AWS_SECRET_ACCESS_KEY", warnings)
        self.assertEqual(options.aws_from_env_file(), {"AWS_SECRET_ACCESS_KEY": "s3cr3t"})
        self.assertIn("aws=AWS_SECRET_ACCESS_KEY (in", options.summary())
        self.assertNotIn("s3cr3t", options.summary())
        # The process's environment beats the file, for boto3 too.
        options = Options(environ={"AWS_SECRET_ACCESS_KEY": "from the environment"})
        options.parseOptions([f"--env-file={path}"])
        self.assertEqual(options.aws_from_env_file(), {})

    def test_one_table(self) -> None:
        """
        The table of options is the one source: each setting's default is
        its option's, every field of Settings is filled from an option, and
        every converter says what it expects.
        """
        import dataclasses

        from eventpipe.config.settings import Settings
        from eventpipe.config.table import PARAMETERS

        fields = {f.name: f for f in dataclasses.fields(Settings)}
        filled = {p.setting: p for p in PARAMETERS if p.setting}
        self.assertEqual(set(fields) - set(filled), {"allow", "repair_tag_names"})
        for name, parameter in filled.items():
            if name != "instance_id":
                self.assertEqual(fields[name].default, parameter.default, name)
            self.assertNotEqual(getattr(parameter.convert, "expected", ""), "", parameter.name)
        options = parse(["--rotation-interval=7", "--allow=10.0.0.0/24"])
        settings = Settings(**options.settings_fields())
        self.assertEqual((settings.rotation_interval, len(settings.allow)), (7.0, 1))

    def test_sizes(self) -> None:
        self.assertEqual(parse_size("5242880"), 5242880)
        self.assertEqual(parse_size("5MiB"), 5242880)
        self.assertEqual(parse_size("5MB"), 5_000_000)
        self.assertEqual(parse_size("512KiB"), 524288)
        self.assertEqual(parse_size("1.5 GB"), 1_500_000_000)
        for bad in ("", "MB", "5 MX", "-1"):
            self.assertRaises(ValueError, parse_size, bad)
