"""Validation stage: check one subject's raw capture and the configured model files before any
heavy work (`[dataset]`, `[audio]`, `[flame]`, `[emoca]`, `[bgm]`).

The plain checks are `tasks.capture.checks` (`validate_capture_details`).

`ValidateCapture(subject)` writes `processed/<subject>/validation.json` only when the capture
passes (errors would otherwise leave an output that marks the task complete); on failure it
writes `validation_failed.json` beside it for the user and raises `CaptureInvalid`, so no heavy
stage starts.
"""
from __future__ import annotations

import logging

import luigi

from tasks import config
from tasks.base import SubjectTask
from tasks.capture.checks import ERROR, errors_of, validate_capture_details
from tasks.common.atomic import write_json_atomic
from tasks.common.errors import CaptureInvalid
from tasks.common.names import check_write_path
from tasks.common.settings import AudioSettings, BgmSettings, DatasetSettings, EmocaSettings, FlameSettings
from tasks.layout import reserved_names

log = logging.getLogger("singinghead")


class ValidateCapture(SubjectTask):
    """Check one subject's raw capture; heavy stages require this."""
    STAGE = "validate"  # the name `rerun --from` and the dataset manifest use

    def output(self):
        return luigi.LocalTarget(str(self.layout.validation_report(self.subject)))

    def run(self):
        lay = self.layout
        problems, facts = validate_capture_details(
            lay.raw, [self.subject], dataset=config.read(DatasetSettings), audio=config.read(AudioSettings),
            flame=config.read(FlameSettings), emoca=config.read(EmocaSettings), bgm=config.read(BgmSettings),
            reserved=reserved_names())
        report = {"subject": self.subject, "problems": problems, "facts": facts.get(self.subject, {}),
                  "ok": not errors_of(problems)}
        for p in problems:
            (log.error if p["level"] == ERROR else log.warning)("%s: %s", p["path"], p["problem"])
        # Where a failing validation's report goes (not the task output: see the module docstring).
        failed = lay.validation_failed_report(self.subject)
        if errors_of(problems):
            write_json_atomic(failed, report)
            raise CaptureInvalid(errors_of(problems))
        check_write_path(failed).unlink(missing_ok=True)
        write_json_atomic(self.output().path, report)
