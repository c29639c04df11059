"""BGM stage: each song's background music (`[bgm]`, `[device]`).

The plain code is `tasks.separation.vocals.separate_song_bgm` (accompaniment.wav, else Demucs,
else the weight-free vocal remover, a stand-in named as such).
"""
from __future__ import annotations

import luigi

from tasks import config
from tasks.base import SongTask
from tasks.common.settings import BgmSettings, DeviceSettings
from tasks.devices import gpu_resources, torch_device
from tasks.separation.vocals import separate_song_bgm
from tasks.validate import ValidateCapture


class SeparateBGM(SongTask):
    """processed/<s>/<song>/bgm.wav (+ bgm.json): the song's background music."""
    STAGE = "bgm"  # the name `rerun --from` and the dataset manifest use

    @property
    def resources(self):
        return gpu_resources(uses_gpu=bool(config.read(BgmSettings).demucs_repo))  # the remover is CPU-only

    def requires(self):
        return ValidateCapture(subject=self.subject)

    def output(self):
        lay = self.layout
        return {"wav": luigi.LocalTarget(str(lay.bgm_wav(self.subject, self.song))),
                "record": luigi.LocalTarget(str(lay.bgm_record(self.subject, self.song)))}

    def run(self):
        lay = self.layout
        separate_song_bgm(lay.raw_song_dir(self.subject, self.song), lay.bgm_wav(self.subject, self.song),
                          lay.bgm_record(self.subject, self.song), config.read(BgmSettings),
                          torch_device(config.read(DeviceSettings)), self.subject, self.song, task=self)
