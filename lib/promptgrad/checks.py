"""Check a notebook's parameters before any model loads (``python -m promptgrad.runner --check``).

Every task name, every split size (the splits are built from the offline data), every
per-task setting and every model spec is checked, and every problem is reported at once,
each with what to do. What the run will need from outside (the Hugging Face hub, an API key)
is listed as a note, not a problem: the machine that runs the profile may have it.

The notebooks share one vocabulary, which is all this module knows of them: ``TASKS``,
``N_TRAIN`` (02: ``N_EXEMPLARS``), ``N_DEV``, ``N_TEST``, per-task settings as a
value or a dict (``tasks.per_task``), and models in parameters named ``*MODEL`` or
``SCALE_MODELS``.
"""

from __future__ import annotations

import dataclasses
import os

from .tasks import DataNotFoundError, get_task, make_splits, per_task

SIZE_NAMES = {"n_train": ("N_TRAIN", "N_EXEMPLARS"), "n_dev": ("N_DEV",), "n_test": ("N_TEST",)}
# settings looked up per task wherever the notebook declares them (a dict needs an entry per task)
PER_TASK = ("STEPS", "BATCH_SIZE", "LOOP_DEV")
ENGINE_KINDS = ("transformers", "openai", "llamacpp")


@dataclasses.dataclass
class Report:
    notebook: str
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [f"{self.notebook}: {'ok' if self.ok else f'{len(self.problems)} problem(s)'}"]
        lines += [f"  problem: {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def size_parameters(params: dict) -> dict[str, object]:
    """The notebook's split sizes by ``make_splits`` argument (0 where it declares none)."""
    return {arg: next((params[n] for n in names if n in params), 0) for arg, names in SIZE_NAMES.items()}


def check_model(spec, name: str) -> tuple[list[str], list[str]]:
    """(problems, notes) for one engine spec, without loading anything."""
    if spec is None:
        return [], []
    if isinstance(spec, str):
        spec = {"kind": "openai", "model": spec[len("openai:"):]} if spec.startswith("openai:") else \
            {"kind": "transformers", "model": spec}
    if not isinstance(spec, dict):
        return [f"{name} must be a model name or a dict with 'kind', got {spec!r}."], []
    kind = spec.get("kind", "transformers")
    if kind not in ENGINE_KINDS:
        return [f"{name}: unknown engine kind '{kind}'; expected one of {list(ENGINE_KINDS)}."], []
    model = spec.get("model")
    if kind == "openai":
        if not model:
            return [f"{name}: an OpenAI-compatible engine needs 'model'."], []
        if spec.get("base_url"):
            return [], [f"{name}: the server at {spec['base_url']} must be up"]
        key = spec.get("api_key_env", "OPENAI_API_KEY")
        return [], [] if os.environ.get(key) else [f"{name}: needs {key} (OpenAI '{model}')"]
    if kind == "llamacpp":
        path = model
        if path and path != "smollm2-135m-instruct" and not os.path.isfile(os.path.expanduser(path)):
            return [f"{name}: GGUF file '{path}' does not exist."], []
        return [], []
    from .models import EMBEDDED_MODEL, check_model_name

    try:
        check_model_name(model or EMBEDDED_MODEL)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        return [f"{name}: {err}"], []
    model = model or EMBEDDED_MODEL
    local = model == EMBEDDED_MODEL or os.path.exists(os.path.expanduser(model))
    notes = [] if local else [f"{name}: '{model}' loads from the Hugging Face hub"]
    return [], notes + [f"{name}: {weights_note(model)}"]


def weights_note(model: str) -> str:
    """The weights' memory, from the model's config (``models.memory_estimate``: its published copy
    where its own cannot load here), before it loads."""
    from .models import memory_estimate

    try:
        bf16 = memory_estimate(model, "bfloat16")
    except Exception as err:  # offline, not in the hub cache and not among the published configs...
        return f"weights' size unknown here ({type(err).__name__})"
    source = f", from its published config ({bf16['published']})" if bf16["published"] else ""
    return (f"{bf16['parameters'] / 1e9:.2f}B parameters: {bf16['gib']:.1f} GiB of weights in bf16 (cuda), "
            f"{2 * bf16['gib']:.1f} GiB in fp32 (cpu){source}")


def check_notebook(notebook: str, params: dict) -> Report:
    report = Report(notebook)
    names = list(params.get("TASKS") or [])
    outside = [n for n in params.get("SCALE_TASKS") or [] if n not in names] if params.get("SCALE_MODELS") else []
    if outside:
        report.problems.append(f"SCALE_TASKS names {outside}, which are not in TASKS {names}: add them to TASKS.")
    missing = [n for n in params.get("HYBRID_TASKS") or [] if n not in names]
    if missing:
        report.problems.append(f"HYBRID_TASKS names {missing}, which are not in TASKS: add them to TASKS.")
    sizes = size_parameters(params)
    seed = params.get("SEED", 0)
    for name in names:
        try:
            task = get_task(name)
        except KeyError as err:
            report.problems.append(str(err.args[0]))
            continue
        settings = {}
        for setting in (s for s in PER_TASK if s in params):
            try:
                settings[setting] = per_task(params[setting], task, setting)
            except KeyError as err:
                report.problems.append(str(err.args[0]))
        try:
            wanted = {arg: per_task(value, task, SIZE_NAMES[arg][0]) for arg, value in sizes.items()}
            splits = make_splits(task, seed=seed, **wanted)
        except KeyError as err:
            report.problems.append(str(err.args[0]))
            continue
        except DataNotFoundError as err:
            if "(hub only)" in str(err):
                report.notes.append(f"{name}: loads from the Hugging Face hub (not offline); sizes unchecked")
            else:
                report.problems.append(str(err))
            continue
        except ValueError as err:
            report.problems.append(f"{name}: {err}")
            continue
        if splits.borrowed_from_test:
            report.notes.append(f"{name}: its train pool is short, {splits.borrowed_from_test} train/dev rows come "
                                f"from the test pool (never from the test rows)")
        loop_dev = settings.get("LOOP_DEV")
        if isinstance(loop_dev, int) and loop_dev > len(splits.dev):
            report.problems.append(f"{name}: LOOP_DEV={loop_dev} is more than the {len(splits.dev)} dev examples; "
                                   f"lower it or raise N_DEV.")
    for key, value in params.items():
        if key.endswith("MODEL"):
            problems, notes = check_model(value, key)
        elif key == "SCALE_MODELS":
            found = [check_model(v, f"SCALE_MODELS[{i}]") for i, v in enumerate(value or [])]
            problems, notes = [p for f in found for p in f[0]], [n for f in found for n in f[1]]
        else:
            continue
        report.problems += problems
        report.notes += notes
    report.problems += _method_problems(params)
    return report


def _method_problems(params: dict) -> list[str]:
    """Method names a notebook cannot run, with a suggestion; the hybrid without its two parts."""
    from .compare import hybrid_problem
    from .methods import NAMES, unknown_names

    problems = []
    if "METHODS" in params:
        unknown = unknown_names(params["METHODS"], NAMES)
        if unknown:
            problems.append(f"Unknown method {unknown}; choose from {list(NAMES)}.")
        hybrid = hybrid_problem(params.get("HYBRID_TASKS"), params["METHODS"])
        problems += [hybrid] if hybrid else []
    return problems
