"""Model, CPU and unit-file checks: what the daemon needs besides its folders."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import huggingface_hub

from daemon.classify.model_files import missing_parts, weights_digest
from daemon.config import Config
from daemon.doctor.verdicts import Finding, fail, ok, warn
from daemon.storage.urls import sqlite_file

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def model_folder(name_or_path: str) -> Finding:
    check = f"model {name_or_path}"
    folder = Path(name_or_path)
    fetch = "tigerwatch download-model openai/clip-vit-base-patch32 ./clip-vit-base-patch32"
    if not folder.is_dir():
        cached = huggingface_hub.try_to_load_from_cache(name_or_path, "config.json")
        if isinstance(cached, str):
            return ok(check, f"in the Hugging Face cache, revision {Path(cached).parent.name}")
        fix = f"on a connected machine run `{fetch}`, copy it here, set model.name_or_path"
        return fail(check, "not a folder and not in the Hugging Face cache", fix)
    missing = missing_parts(folder)
    if missing:
        fix = f"copy the whole folder again (`{fetch}` writes a complete one)"
        return fail(check, f"the folder lacks its {', '.join(missing)} file(s)", fix)
    try:
        revision = weights_digest(folder)
    except OSError as err:
        return fail(check, f"cannot read the weights: {err}", "chmod a+r the model's files")
    return ok(check, f"complete, revision {revision}")


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_precision(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> Finding:
    """Which precision pays on this CPU: bf16 only with native support, else fp32."""
    try:
        flags = cpu_flags(cpuinfo_path.read_text())
    except OSError:
        flags = set()
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    vector = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "no AVX2"
    if native:
        return ok("cpu", f"{vector}, native bf16 ({', '.join(native)}): bf16 pays here")
    return ok("cpu", f"{vector}, no native bf16: fp32 (bf16 would run several times slower)")


def configured_precision(config: Config, cpu: Finding) -> Finding:
    if config.model.precision == "bf16" and "no native bf16" in cpu.detail:
        fix = "set model.precision: fp32 (or int8)"
        return warn("model.precision bf16", "this CPU has no native bf16", fix)
    return ok(f"model.precision {config.model.precision}")


def unit_file(unit: Path, config: Config) -> list[Finding]:
    """The unit runs this configuration and may write every folder it names."""
    check = f"unit {unit}"
    if not unit.is_file():
        fix = f"cp systemd/tigerwatch.service {unit} (see README, Running under systemd)"
        return [warn(check, "not found", fix)]
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(unit)
    service = parser["Service"] if parser.has_section("Service") else {}
    findings = [_exec_config(check, service.get("ExecStart", ""), config)]
    writable = [Path(p) for p in service.get("ReadWritePaths", "").split()]
    state = service.get("StateDirectory", "")
    writable += [Path("/var/lib") / name for name in state.split()]
    findings += [_writable(check, role, folder, writable) for role, folder in _folders(config)]
    return findings


def _exec_config(check: str, exec_start: str, config: Config) -> Finding:
    words = shlex.split(exec_start)
    named = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--config")), None)
    source = config.source.resolve()
    if named is None or Path(named).resolve() != source:
        fix = f"set ExecStart=... run -c {source}"
        return fail(f"{check}: ExecStart", f"runs -c {named}, not this file", fix)
    return ok(f"{check}: ExecStart", f"runs -c {named}")


def _writable(check: str, role: str, folder: Path, writable: list[Path]) -> Finding:
    name = f"{check}: {role} writable"
    if any(folder.resolve().is_relative_to(root) for root in writable):
        return ok(name, str(folder))
    fix = f"add {folder} to ReadWritePaths= (and RequiresMountsFor=)"
    return fail(name, f"{folder} is outside ReadWritePaths (ProtectSystem=strict)", fix)


def _folders(config: Config) -> list[tuple[str, Path]]:
    folders = [("inbox", inbox.path) for inbox in config.paths.inbox]
    folders += list(config.paths.destinations.items())
    database = sqlite_file(config.database.url)
    return folders + ([("database folder", database.parent)] if database else [])
