from pathlib import Path

from lg_pipeline.curation.teacher import CachedTeacher, PrecomputedTeacher
from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.dynamics.learning.rephrase import (
    REPHRASE_VERSION,
    rephrase_line,
    rephrase_probes,
    rephrase_types,
)
from lg_pipeline.dynamics.learning.run import LearningDynamicsSettings, TrainingData, plan_run
from tests.helpers.dynamics import rows, wrong_rows


class EchoTeacher(CachedTeacher):
    """A generating teacher on the curation's cache whose reply names the kind asked for and the text rephrased."""

    def __init__(self, cache_dir: Path):
        self.name, self.identity, self.params, self.cache_dir = "echo", ["echo"], {}, cache_dir / "teacher"
        self.prompts: list[str] = []

    def _generate(self, prompt: str) -> str:
        self.prompts.append(prompt)
        kind = "same meaning" if "means exactly the same" in prompt else "same format"
        return f"{kind}: {prompt.rsplit('Answer:', 1)[1].strip()}"


def test_the_chosen_and_rejected_responses_get_both_rephrases_on_their_prompt(tmp_path):
    teacher = EchoTeacher(tmp_path)
    probes = build_probes(rows(), 2, 2, seed=0, wrong=wrong_rows())
    rephrased = rephrase_probes(probes, teacher)
    trained = [p for p in probes if p.probe_type == "trained"]
    assert sorted({p.probe_type for p in rephrased}) == sorted(rephrase_types())
    assert len(rephrased) == 4 * len(trained)
    for probe in rephrased:
        of = "trained" if probe.probe_type.startswith("chosen") else "wrong"
        source = next(p for p in probes if p.prompt_id == probe.prompt_id and p.probe_type == of)
        assert probe.instruction == source.instruction and probe.response.endswith(source.response)
        assert probe.response.startswith("same meaning" if probe.probe_type.endswith("semantic") else "same format")
    assert all(p.startswith(f"[{REPHRASE_VERSION}]") for p in teacher.prompts)


def test_rephrases_are_cached_so_a_rerun_asks_nothing(tmp_path):
    probes = build_probes(rows(), 2, 2, seed=0, wrong=wrong_rows())
    first = rephrase_probes(probes, EchoTeacher(tmp_path))
    again = EchoTeacher(tmp_path)
    assert rephrase_probes(probes, again) == first and again.prompts == []


def test_without_a_teacher_that_rephrases_the_probes_are_left_out_in_one_line(tmp_path):
    said: list[str] = []
    settings = LearningDynamicsSettings.build(train={"steps": 2, "batch_size": 2}, n_probes=2)
    plan = plan_run(settings, TrainingData(rows(), wrong=wrong_rows()), report=said.append)
    assert said == ["rephrase probes: no teacher configured; left out"]
    assert not set(rephrase_types()) & {p.probe_type for p in plan.probes}
    precomputed = PrecomputedTeacher({}, "precomputed:x.json")
    assert rephrase_line(precomputed) == (
        "rephrase probes: the teacher 'precomputed:x.json' writes no rephrases; left out"
    )
    with_teacher = plan_run(settings, TrainingData(rows(), wrong=wrong_rows(), teacher=EchoTeacher(tmp_path)), print)
    assert set(rephrase_types()) <= {p.probe_type for p in with_teacher.probes}
