"""tests/mutation_scores.py: the per-module scores reported from mutmut's verdicts (mutmut itself is not run here)."""

from __future__ import annotations

from collections import Counter

from mutation_scores import EQUIVALENTS_DOC, equivalents, module_of, score, scores


def test_mutants_of_functions_and_of_methods_are_put_under_their_module():
    assert module_of("covid_sweep.core.files.x_publish_dir__mutmut_3") == "covid_sweep.core.files"
    assert module_of("covid_sweep.sweep.store.postgres.xǁ_Resultǁ__init____mutmut_1") == "covid_sweep.sweep.store.postgres"


def test_a_score_counts_timeouts_as_caught_and_leaves_equivalents_and_unrun_mutants_out():
    verdicts = {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "timeout", "m.x_f__mutmut_3": "survived",
                "m.x_f__mutmut_4": "no tests", "m.x_f__mutmut_5": "survived", "m.x_f__mutmut_6": "not checked",
                "n.x_g__mutmut_1": "not checked"}
    by_module = scores(verdicts, {"m.x_f__mutmut_5"})
    assert by_module["m"] == Counter(killed=1, timeout=1, survived=1, equivalent=1, **{"no tests": 1, "not checked": 1})
    assert score(by_module["m"]) == 50.0  # 2 caught of 4 judged
    assert score(by_module["n"]) is None  # nothing run: no score rather than 0 %


def test_every_equivalent_mutant_in_the_doc_is_named_in_full(tmp_path):
    listed = equivalents()
    assert listed and all(name.startswith("covid_sweep.") and "__mutmut_" in name for name in listed)
    doc = tmp_path / "m.md"
    doc.write_text("| `covid_sweep.core.files.x_f__mutmut_2` | why |\nnot a name: `covid_sweep.core.files`\n")
    assert equivalents(doc) == {"covid_sweep.core.files.x_f__mutmut_2"}
    assert EQUIVALENTS_DOC.name == "mutation.md"
