"""helpers/article.py: the article's claims each carry a verdict and evidence; its code really runs, in a Python that
never imports helpers, against a replica of the released repository, and fails the way a reader's would."""

from __future__ import annotations

import json

import pytest

import helpers
from helpers import article
from helpers.grok2.tokenization_grok2 import tok_json_from_tokenizer, tokenizer_from_tok_json
from helpers.units import GB


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return article.write_replica(tmp_path_factory.mktemp("article") / "grok-2")


@pytest.fixture(scope="module")
def runs(replica):
    return article.run_article_code_variants(replica, (False, True))  # one subprocess for both (~6 s)


def test_every_claim_has_a_verdict_evidence_and_the_planners_figures():
    claims = article.claims()
    assert len(claims) >= 15
    for claim in claims:
        assert claim.verdict in (article.TRUE, article.PARTLY, article.FALSE, article.NOT_TESTABLE), claim
        assert claim.quote and claim.english and len(claim.evidence) > 30, claim
    text = {c.english: c for c in claims}
    for named in ("Text Generation Inference (TGI) serves it", "run it distributed with DeepSpeed",
                  "quick deployment on AWS, GCP or Azure", "a GPU with at least 24 GB of VRAM"):
        assert text[named].verdict == article.FALSE, named
    nf4 = helpers.plan_profile("grok-2").weight_bytes("nf4")
    assert f"{nf4 / GB:,.1f} GB" in text["a GPU with at least 24 GB of VRAM"].evidence  # computed, not typed
    # the card the article names holds 24 GiB as sold (helpers.accelerators): the ratio is to that, not to 24e9 bytes
    rtx_3090 = article.ACCELERATORS["RTX 3090"]
    assert article.ARTICLE_VRAM_BYTES == rtx_3090.memory_bytes == 24 * 2**30
    assert f"{nf4 / rtx_3090.memory_bytes:.1f} times the 24 GB of the {rtx_3090.name}" in text[
        "a GPU with at least 24 GB of VRAM"].evidence
    assert f"{nf4 / rtx_3090.memory_bytes:.1f}" == "5.5" != f"{nf4 / (24 * GB):.1f}"
    assert "'git'" in text["it is in Transformers format"].evidence
    # every claim of the article gets a verdict, those the course cannot test included, each saying why
    for named in ("Grok 3 is X's default LLM, used daily by millions", "announced in a post on X on 24 August 2025",
                  "in line with Meta (LLaMA) and Mistral AI opening their models"):
        assert text[named].verdict == article.NOT_TESTABLE, named
    accessible = text["Hugging Face makes it easily accessible to the worldwide community"]
    grok, h100 = helpers.plan_profile("grok-2"), article.ACCELERATORS["H100"]
    assert accessible.verdict == article.PARTLY
    assert f"need {grok.gpus_needed(h100.memory_bytes, 'nf4')} x {h100.name}" in accessible.evidence  # computed
    assert "'xai-org/grok-2'" in text["the minimal steps to follow"].evidence  # the article's own line, read
    table = article.verdict_table(claims)
    assert table.count("\n") == len(claims) + 1


def test_the_replica_is_the_released_layout_without_weights(replica):
    assert json.loads((replica / "config.json").read_text()) == json.loads(helpers.GROK2_RELEASED_CONFIG.read_text())
    assert not list(replica.glob("*.safetensors")) and (replica / "tokenizer.tok.json").is_file()
    tokenizer = helpers.load_tokenizer(replica)  # the course's conversion of the tiktoken file
    assert [tokenizer.convert_tokens_to_ids(t) for t in ("<|pad|>", "<|separator|>", "<|eos|>")] == [0, 1, 2]
    article.write_replica(replica)  # its own folder: rebuilt in place


def test_a_folder_it_did_not_write_is_refused(tmp_path):
    mine = tmp_path / "learner"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(helpers.CourseError, match="not written by"):
        article.write_replica(mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_tiny_tokenizer_survives_the_round_trip_through_tok_json(tmp_path, tokenizer):
    tok_json_from_tokenizer(tokenizer, tmp_path / "tokenizer.tok.json")
    again = tokenizer_from_tok_json(tmp_path / "tokenizer.tok.json")
    for text in ("Explique-moi la différence entre Grok 2.5 et Grok 3.", "How many experts does Grok 2 have?"):
        assert again.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)


def test_the_articles_code_fails_line_by_line_as_a_reader_would_see_it(runs):
    plain, trusting = runs
    assert not plain.helpers_imported  # stock transformers, as the article's reader has it
    outcomes = [line.outcome for line in plain.lines]
    assert [line.line for line in plain.lines] == list(article.ARTICLE_CODE)
    assert plain.lines[2].ok and "BertTokenizer" in outcomes[2]  # no error, and the wrong tokenizer
    assert not plain.lines[3].ok and outcomes[3].startswith("OSError") and "model.safetensors" in outcomes[3]
    assert [line.ok for line in plain.lines[5:]] == [False, False, False]
    assert all("NameError" in outcome for outcome in outcomes[5:])
    assert "[UNK]" in plain.probes["tokenizer.tokenize(prompt)"]
    # trust_remote_code=True changes nothing: the repository has no code (no auto_map) to trust
    assert trusting.trust_remote_code and "trust_remote_code=True" in trusting.lines[3].ran
    assert [line.outcome for line in trusting.lines] == outcomes
    assert "| ❌ OSError" in plain.table()


def test_a_missing_folder_is_refused_with_the_fix(tmp_path):
    with pytest.raises(helpers.CourseError, match="write_replica"):
        article.run_article_code(tmp_path / "nowhere")
