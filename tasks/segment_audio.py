"""Audio stage: the dry vocal and the BGM cut sample-accurately to every portrait segment
(`[audio]`, `[dataset]`).

The plain code is `tasks.media.segment_audio.segment_song_audio`.
"""
from __future__ import annotations

import luigi

from tasks import config
from tasks.base import SongTask
from tasks.bgm import SeparateBGM
from tasks.common.settings import AudioSettings, DatasetSettings
from tasks.crop import CropPortraits
from tasks.media.segment_audio import SongAudioFiles, segment_song_audio


class SegmentAudio(SongTask):
    """processed/<s>/<song>/audio/segment_NNN_{vocal,bgm}.wav + audio.json."""
    STAGE = "audio"  # the name `rerun --from` and the dataset manifest use

    def requires(self):
        return {"crop": CropPortraits(subject=self.subject, song=self.song),
                "bgm": SeparateBGM(subject=self.subject, song=self.song)}

    def output(self):
        return luigi.LocalTarget(str(self.layout.segment_audio_record(self.subject, self.song)))

    def run(self):
        lay, subject, song = self.layout, self.subject, self.song
        files = SongAudioFiles(
            segments_json=lay.segments_json(subject, song), song_json=lay.song_json(subject, song),
            vocal_wav=lay.vocal_wav(subject, song), bgm_wav=lay.bgm_wav(subject, song),
            bgm_record=lay.bgm_record(subject, song), out_dir=lay.segment_audio_dir(subject, song),
            out_record=lay.segment_audio_record(subject, song),
            segment_wavs=lambda i: (lay.segment_vocal_wav(subject, song, i), lay.segment_bgm_wav(subject, song, i)))
        segment_song_audio(files, config.read(AudioSettings), config.read(DatasetSettings), subject, song, task=self)
