"""The user's path, as the user takes it (issue 17).

A temporary copy of the shipped layout (the shipped `luigi.cfg` with its relative `raw`/`processed`,
the working directory at its root, `.venv/bin/...` as the README writes it) holds ONE tiny demo
capture; on it, every command line of README.md's code blocks runs as written, in the README's
order (so a drifted README fails here), the loader snippets of the README, docs/ and the release's
data card run against the built release, every task class of the DAG is named through
`luigi --module pipeline`, a rerun provably rebuilds, and a missing/empty capture or an unknown
subject is one line before any work. Every command or flag a fix message names is parsed by the
parser that would take it.

Only sizes are made small, through a second config file (LUIGI_CONFIG_PATH, read after
./luigi.cfg); the paths stay the shipped relative ones.
"""
from __future__ import annotations

import ast
import configparser
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from luigi.cmdline_parser import CmdlineParser

import pipeline
from demo.capture import make_demo_capture
from pipeline.build import config_flags, config_overrides, split_config_args
from pipeline.cli import build_parser, main
from pipeline.registry import task_graph
from tasks.dataset.verify import verify_release

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent          # .venv/bin/python -> .venv
SUBJECT = "S001"
# sizes only: 1 s clips split per clip (so the test split holds clips), short refinement
SMALL_CFG = """\
[crop]
output_size = 128
keyframe_interval = 15
detect_width = 320
[dataset]
clip_frames = 15
min_sequence_seconds = 1.0
split_by_song = false
[refine]
max_iters = 100
"""
SHIPPED = ("luigi.cfg", "README.md", "raw/README.md", "processed/README.md", "docs")


# ----------------------------------------------------------------------------- the shipped layout
@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the shipped layout with one tiny capture in raw/: (root, env for subprocesses)."""
    root = tmp_path_factory.mktemp("checkout")
    for name in SHIPPED:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    (root / ".venv").symlink_to(VENV, target_is_directory=True)
    (root / "small.cfg").write_text(SMALL_CFG)
    make_demo_capture(root / "raw", root / "demo_truth", width=320, height=180, seconds=6.0, n_subjects=1,
                      n_songs=1, workers=1, with_scan=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LUIGI_CONFIG_PATH": str(root / "small.cfg"),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return root, env


def shell(cmd: str, root: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(checkout):
    """The checkout after a full build (the README test builds it; alone, this builds it)."""
    root, env = checkout
    if not (root / "processed" / "build_summary.json").is_file():
        r = shell(".venv/bin/luigi --module pipeline BuildSingingHead --local-scheduler", root, env)
        assert r.returncode == 0, r.stderr[-3000:]
    return root, env


def song_of(root: Path) -> str:
    return sorted(p.name for p in (root / "raw" / SUBJECT / "songs").iterdir())[0]


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """{relative path: (mtime_ns, sha256)} of every file under `folder`."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- README commands
def readme_commands(text: str) -> list[str]:
    """The command lines of the README's plain code blocks (`.venv/bin/...`), continuations joined."""
    commands = []
    for block in re.findall(r"^```[ \t]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith(".venv/bin/"):
                commands.append(" ".join(shlex.split(line, comments=True)))
    return commands


def _placeholder(token: str) -> bool:
    """DIR, SONG.flac, PRED_DIR, /data/raw: the user's own values, not something this test has."""
    return token.startswith("/") or bool(re.search(r"(^|/)[A-Z]{3,}(_|\.|$|/)", token))


def parse_command(argv: list[str]) -> None:
    """Parse a `singinghead ...` or `luigi ...` command line with the parser that takes it."""
    prog, args = Path(argv[0]).name, argv[1:]
    if prog == "singinghead":
        build_parser().parse_args(split_config_args(args)[0])
    elif prog == "luigi":
        pipeline.stage_modules()
        CmdlineParser(args)
    else:
        raise AssertionError(f"unknown program {argv[0]}")


def make_predictions(root: Path) -> None:
    """predictions/<clip id>.pkl for the test split: the released ground truth itself."""
    tree = root / "processed" / "dataset" / "SingingHead"
    ids = (tree / "test.txt").read_text().split()
    assert ids, "the tiny capture must give test clips"
    (root / "predictions").mkdir(exist_ok=True)
    for cid in ids:
        shutil.copy2(tree / "flame_seqs" / f"{cid}.pkl", root / "predictions" / f"{cid}.pkl")


def test_readme_commands_run_as_written(checkout):
    root, env = checkout
    commands = readme_commands((REPO / "README.md").read_text())
    assert len(commands) >= 10 and any("rerun" in c for c in commands)
    ran, parsed_only, seen = [], [], set()
    before = None
    for cmd in commands:
        argv = shlex.split(cmd)
        argv = [song_of(root) if t == "SONG" else t for t in argv]     # the one placeholder the demo fills
        parse_command(argv)                                            # every command parses as written
        sub = argv[1] if Path(argv[0]).name == "singinghead" else None
        # each command (singinghead subcommand or --from stage, luigi task class) runs once: a
        # second `run` on the complete DAG would only pay the start-up again (it is parsed above)
        key = (sub, argv[argv.index("--from") + 1] if "--from" in argv else None) if sub else argv[3]
        if any(_placeholder(t) for t in argv) or key in seen:
            parsed_only.append(cmd)
            continue
        seen.add(key)
        extra = ""
        if sub == "rerun" and "--from" not in argv:
            # the whole subject again: the build above already measured that; here the plan
            extra = " --dry-run"
        if sub == "rerun" and "--from" in argv:
            before = snapshot(root / "processed")
        if sub == "evaluate":
            make_predictions(root)
        r = shell(shlex.join(argv) + extra, root, env)
        ran.append(cmd)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        assert "Traceback" not in r.stderr, cmd
        if sub in ("run", "rerun", "release") and not extra:
            # logs once, on stderr; the plan and the outcome on stdout
            assert r.stderr.count("===== Luigi Execution Summary =====") == 2, cmd
            assert "task(s) to run" in r.stdout and "build succeeded" in r.stdout, cmd
            lines = [ln for ln in r.stderr.splitlines() if "Informed scheduler" in ln]
            assert len(lines) == len(set(lines)), f"{cmd}: a log line printed twice"
        if extra:
            assert "would remove" in r.stdout and "validation.json" in r.stdout and "segments.json" in r.stdout
        if sub == "rerun" and "--from" in argv:
            check_rerun_rebuilt(root, argv[argv.index("--from") + 1], before, r.stdout)
        if sub == "verify-release":
            sums = hashlib.sha256((root / "processed" / "release" / "SHA256SUMS").read_bytes()).hexdigest()
            assert re.search(r": OK: [1-9]\d* clip\(s\), \d+ file\(s\), \d+ bytes\nrelease fingerprint "
                             + sums + r" \(sha256 of SHA256SUMS\)", r.stdout), r.stdout
        if sub == "preview":
            assert (root / "processed" / "previews" / f"{argv[2]}.mp4").is_file()
            assert not list((root / "processed").glob(f"{SUBJECT}/*/motion/*.mp4"))
        if sub == "evaluate":
            assert (root / "predictions" / "result_test.json").is_file() and not (root / "result.json").exists()
    assert any("BuildSingingHead --local-scheduler" == c.split("pipeline ")[-1] for c in ran)
    assert verify_release(root / "processed" / "release") == []
    assert {"run", "rerun", "preview", "evaluate", "verify-release", "make-head-model", "release", "validate",
            "stages"} <= {shlex.split(c)[1] for c in ran if c.startswith(".venv/bin/singinghead")}
    assert parsed_only, "the /data and --config /lab examples parse, they are not run"


def check_rerun_rebuilt(root: Path, stage: str, before: dict, stdout: str) -> None:
    """After `rerun --subject S001 --from refine`: what it listed as removed was rebuilt (new mtime),
    the stages upstream of refine kept their files (same mtime and bytes)."""
    assert stage == "refine", "the README's rerun with --from is checked for refine"
    after = snapshot(root / "processed")
    processed = (root / "processed").resolve()
    removed = [str(Path(line.strip()).resolve().relative_to(processed)) for line in stdout.splitlines()
               if line.startswith("  /")]
    motion = [p for p in before if "/motion/segment_" in p and p.endswith(".npz")]
    assert motion and set(motion) <= set(removed), (motion, removed)
    for rel in removed:
        assert rel in before and rel in after, rel
        assert after[rel][0] != before[rel][0], f"{rel} was not rebuilt"
    upstream = [p for p in before
                if re.match(rf"{SUBJECT}/(.+/(portrait|frames|audio)/|.+/bgm\.wav$|validation\.json$)", p)]
    assert upstream
    for rel in upstream:
        assert after[rel] == before[rel], f"{rel} was rewritten by a rerun from refine"


# ----------------------------------------------------------------------------- loader snippets
def loader_snippets(text: str) -> list[str]:
    return [b for b in re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M) if "SingingHeadDataset" in b]


def test_loader_snippets_run_against_the_built_release(built, monkeypatch):
    root, _ = built
    sources = {"README.md": REPO / "README.md", "docs/loading.md": REPO / "docs" / "loading.md",
               "data card": root / "processed" / "release" / "README.md"}
    monkeypatch.chdir(root)                         # where the README puts the user
    for name, path in sources.items():
        snippets = loader_snippets(path.read_text())
        assert snippets, name
        for code in snippets:
            scope: dict = {}
            exec(compile(code, f"<{name}>", "exec"), scope)   # noqa: S102 - the project's own docs
            assert scope["item"]["motion"].shape[1] == 59 and scope["motion"].shape[-1] == 59, name


# ----------------------------------------------------------------------------- luigi --module pipeline
def test_every_task_class_runs_from_module_pipeline(built):
    root, env = built
    small = configparser.ConfigParser()
    small.read_string(SMALL_CFG)
    with config_overrides({s: dict(small[s]) for s in small.sections()},
                          paths={"raw_dir": root / "raw", "processed_dir": root / "processed",
                                 "release_dir": root / "processed" / "release"}):
        families = sorted({t.task_family for t in task_graph(pipeline.BuildSingingHead())})
    assert {"CropPortraits", "EstimateFrames", "RefineMotion", "PackRelease"} <= set(families)
    # exactly what `luigi --module pipeline X` does first, in a fresh process, for every class
    code = ("import sys\nfrom luigi.cmdline_parser import CmdlineParser\nbad = []\n"
            "for fam in sys.argv[1:]:\n"
            "    try:\n        CmdlineParser(['--module', 'pipeline', fam])\n"
            "    except Exception as e:\n        bad.append(f'{fam}: {e}')\n"
            "heavy = 'torch' in sys.modules\nprint(bad, heavy)\n")
    r = subprocess.run([sys.executable, "-c", code, *families], cwd=root, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[] True", r.stdout + r.stderr[-2000:]
    # (a plain `import pipeline` stays light: test_plumbing.test_help_imports_nothing_heavy)


# ----------------------------------------------------------------------------- bad capture paths
def test_missing_empty_capture_and_unknown_subject_are_one_line(built, tmp_path, capsys):
    root, env = built
    r = shell(".venv/bin/luigi --module pipeline BuildSubject --subject S999 --local-scheduler", root, env)
    assert r.returncode != 0
    errors = [ln for ln in r.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "S999" in errors[0] and "fix:" in errors[0] and "Traceback" not in r.stderr
    assert "no portrait segment" not in r.stderr and not (root / "processed" / "S999").exists()
    (tmp_path / "empty").mkdir()
    processed = tmp_path / "processed"
    for args, what in ((["--raw-dir", str(tmp_path / "nonexistent")], "does not exist"),
                       (["--raw-dir", str(tmp_path / "empty")], "holds no subject"),
                       (["--raw-dir", str(root / "raw"), "--subject", "S999"], "no such subject")):
        assert main(["run", *args, "--processed-dir", str(processed)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert what in err[-1] and "fix:" in err[-1] and not any("Traceback" in e for e in err)
        assert not processed.exists(), "nothing is built before the check"


def test_a_release_without_clips_never_verifies(tmp_path, capsys):
    tree = tmp_path / "SingingHead"
    tree.mkdir()
    for split in ("train", "val", "test"):
        (tree / f"{split}.txt").write_text("")
    problems = verify_release(tree)
    assert problems and "no clips" in problems[0]
    assert main(["verify-release", str(tree)]) == 1
    assert "OK" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- fix messages
FIX_CALLS = {"PipelineInputError", "ModelFileError", "_problem", "_err"}
EXTERNAL = r"k4arecorder|pip install|pip|ffmpeg|make|tar|git"
COMMAND = re.compile(rf"singinghead [a-z][a-z-]*|luigi --module \S+ \S+|\b(?:{EXTERNAL})\b")


def _text(node: ast.AST) -> str:
    """A string or f-string argument as text, each {expression} as the token X0."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X0" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return ""


def fix_messages() -> list[tuple[str, str]]:
    """(where, text) of every error message built by the project's error helpers."""
    out = []
    for folder in ("pipeline", "tasks", "flame_fit", "demo"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in FIX_CALLS:
                    text = " ".join(t for t in map(_text, [*node.args, *(k.value for k in node.keywords)]) if t)
                    if text:
                        out.append((f"{path.relative_to(REPO)}:{node.lineno}", text))
    return out


def accepted_flags(command: str) -> set[str] | None:
    """The flags the parser of `command` ('singinghead rerun', 'luigi --module pipeline X') takes;
    None for an external program's command."""
    words = command.split()
    parser = build_parser()
    global_flags = {s for a in parser._actions for s in a.option_strings}
    if words[0] == "singinghead":
        sub = next(a for a in parser._actions if a.dest == "command").choices
        assert words[1] in sub, f"no command {command!r}"
        return {s for a in sub[words[1]]._actions for s in a.option_strings} | global_flags | set(config_flags())
    if words[0] == "luigi":
        assert words[2] == "pipeline", command
        pipeline.stage_modules()
        CmdlineParser(["--module", "pipeline", words[3]])          # the task class exists
        return set(CmdlineParser._build_parser(root_task=words[3])._option_string_actions)
    return None


def test_every_command_and_flag_a_fix_message_names_is_accepted():
    messages = fix_messages()
    assert len(messages) > 50
    checked, problems = 0, []
    for where, text in messages:
        starts = [(m.start(), m.group(0)) for m in COMMAND.finditer(text)]
        for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            owner = [c for pos, c in starts if pos < m.start()]
            if not owner:
                problems.append(f"{where}: {m.group(0)} without the command that takes it: {text!r}")
                continue
            try:
                flags = accepted_flags(owner[-1])
            except (AssertionError, Exception) as e:   # noqa: B014 - an unknown command or task
                problems.append(f"{where}: {owner[-1]!r}: {e}")
                continue
            if flags is not None and m.group(0) not in flags:
                problems.append(f"{where}: `{owner[-1]}` does not take {m.group(0)}: {text!r}")
            checked += 1
        for _, c in starts:                              # commands named without flags exist too
            try:
                accepted_flags(c)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{where}: {c!r}: {e}")
    assert checked > 5
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- user-facing docs
USER_DOCS = ("README.md", "raw/README.md", "processed/README.md", "docs/loading.md", "docs/scale_out.md")


def test_user_docs_point_only_inside_the_repository():
    missing = []
    for doc in USER_DOCS:
        for name in re.findall(r"`([\w./-]+\.(?:md|py|cfg|txt))`", (REPO / doc).read_text()):
            candidates = [REPO / name, REPO / doc / ".." / name, REPO / "bench" / name]
            # names of files inside a dataset or release (train.txt, README.md of a release) are not links
            if name in ("train.txt", "val.txt", "test.txt", "README.md", "SHA256SUMS", "metadata.csv"):
                continue
            if not any(c.exists() for c in candidates):
                missing.append(f"{doc}: `{name}`")
    assert not missing, missing
