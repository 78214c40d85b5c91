import pytest

from lg_pipeline.dynamics.learning.probes import build_probes
from lg_pipeline.dynamics.learning.truncation import cut_probes_line, cut_tokens, probe_cuts, refuse_cut_probes
from lg_pipeline.errors import SettingsError
from lg_pipeline.gradients.encoding import encode
from tests.helpers.builders import make_tokenizer
from tests.helpers.dynamics import rows


@pytest.mark.parametrize("chat", [False, True])
def test_the_count_is_what_the_measuring_encoding_leaves_out(chat):
    tokenizer = make_tokenizer()
    probes = build_probes(rows(), 4, 4, seed=0)
    whole = {p.probe_id: encode(tokenizer, p.as_example(), chat, 10_000).n_response_tokens for p in probes}
    for max_length in (8, 20, 40, 60, 200):
        for probe in probes:
            enc = encode(tokenizer, probe.as_example(), chat, max_length)
            kept = 0 if enc is None else enc.n_response_tokens
            assert cut_tokens(tokenizer, probe, chat, max_length) == whole[probe.probe_id] - kept


def test_cut_probes_are_refused_naming_the_first_and_the_tokens_cut():
    tokenizer = make_tokenizer()
    probes = build_probes(rows(), 2, 2, seed=0)
    cuts = probe_cuts(tokenizer, probes, False, 60)
    cut = [p for p in probes if cuts[p.probe_id]]
    assert cut and len(cut) < len(probes)  # the irrelevant passage is cut, the short answers are not
    with pytest.raises(SettingsError) as caught:
        refuse_cut_probes(probes, cuts, 60)
    message = caught.value.render({"max_length": "--max-length", "allow_probe_truncation": "--allow-probe-truncation"})
    first = cut[0]
    assert message.startswith(f"--max-length: 60 cuts {cuts[first.probe_id]} response tokens of probe {first.probe_id}")
    assert f"({first.probe_type} of prompt {first.prompt_id})" in message and "(--allow-probe-truncation)" in message
    refuse_cut_probes(probes, probe_cuts(tokenizer, probes, False, 10_000), 10_000)  # nothing cut: no error
    assert cut_probes_line(probes, cuts, 60).startswith(f"{len(cut)} of {len(probes)} probes cut at max_length=60")
