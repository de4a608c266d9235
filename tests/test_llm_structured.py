"""The structured format: the LLM fills a JSON form, the template writes the candidate."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeOpenAI

from hyarch.agent import structured
from hyarch.agent.base import Feedback, PoolEntry
from hyarch.agent.llm import LLMClient, LLMConfig
from hyarch.agent.llm_proposer import LLMProposer
from hyarch.core.candidate import check_forward, load_model_class, make_factory
from hyarch.sandbox.checks import check_source
from hyarch.spaces.loader import load_space


@pytest.fixture(scope="module")
def space():
    return load_space("damped_pendulum")


def form(**kw):
    return {"reasoning": "friction", "terms": [], "new_terms": [], "closures": [], **kw}


def test_the_schema_names_only_what_exists(space):
    schema = structured.schema(space)
    terms = schema["properties"]["terms"]["items"]["enum"]
    assert "omega:linear_friction" in terms and all(":" in t for t in terms)
    sites = schema["properties"]["closures"]["items"]["properties"]["site"]["enum"]
    assert sites == structured.site_keys(space)
    assert structured.response_format(space)["json_schema"]["schema"] == schema
    json.dumps(schema)  # what is sent over the wire


def test_a_filled_form_renders_a_model_with_the_chosen_parts(space):
    source, choices = structured.fill(space, form(
        terms=["omega:linear_friction"],
        new_terms=[{"state": "omega", "expr": "-k * s.omega ** 3",
                    "parameters": [{"name": "k", "init": 0.1, "lower": 0.0, "upper": 2.0}]}],
        closures=[{"site": "omega", "size": "16x16"}]))
    check_source(source)
    cls = load_model_class(source, "candidate.py")
    model = make_factory(cls, space.states, space.inputs, space.scales(), space.shapes)()
    check_forward(model, space.train.y0(), space.train.t[:, 0], None)
    assert set(model.physical_values()) == {"omega0_sq", "alpha", "k"}
    assert "self.k * s.omega ** 3" in source and "Closure(" in source
    assert choices["term:omega:linear_friction"] is True
    assert "new terms omega: -k * s.omega ** 3" in structured.describe(choices)


@pytest.mark.parametrize("bad, reason", [
    (form(terms=["omega:magic"]), "unknown term"),
    (form(closures=[{"site": "omega", "size": "1000x1000"}]), "closure size"),
    (form(closures=[{"site": "nowhere", "size": "16x16"}]), "site"),
    (form(new_terms=[{"state": "omega", "expr": "-k * s.speed", "parameters": [
        {"name": "k", "init": 0.1, "lower": 0, "upper": 1}]}]), "no state or input 'speed'"),
    (form(new_terms=[{"state": "omega", "expr": "-q * s.omega", "parameters": []}]),
     "'q' is neither a parameter"),
    (form(new_terms=[{"state": "omega", "expr": "-k * s.omega", "parameters": [
        {"name": "k", "init": 5, "lower": 1, "upper": 1}]}]), "bounds are one value"),
    (form(new_terms=[{"state": "omega", "expr": "__import__('os')", "parameters": []}]),
     "neither a parameter"),
    (form(new_terms=[{"state": "omega", "expr": "-k *", "parameters": []}]), "not an expression"),
])
def test_a_wrong_form_says_which_field(space, bad, reason):
    with pytest.raises(structured.FormError, match=reason):
        structured.fill(space, bad)


def test_json_is_found_in_chatty_or_fenced_replies():
    assert structured.parse('Sure!\n```json\n{"terms": []}\n```') == {"terms": []}
    with pytest.raises(structured.FormError, match="no JSON object"):
        structured.parse("I would add friction.")


def test_the_proposer_asks_with_the_schema_and_renders_the_reply(space):
    with FakeOpenAI() as server:
        server.reply(json.dumps(form(terms=["omega:linear_friction"])))
        server.reply("not json at all")
        cfg = LLMConfig(model="m", base_url=server.url, api_key="k", retries=0)
        prop = LLMProposer(LLMClient(cfg), format="structured")
        earlier = PoolEntry(id="c0001", source="", proposer="llm", status="ok", val_nmse=0.2,
                            choices={"term:omega:linear_friction": False,
                                     "closure:0:omega": "none"})
        good, bad = prop.propose(space, Feedback(round=2, pool=(earlier,)), n=2)
        body = server.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert "c0001`: no hypothesis term; no closure; val nMSE 0.2" in body["messages"][1]["content"]
    check_source(good.source)
    assert "self.alpha * s.omega" in good.source and good.choices["_format"] == "structured"
    assert bad.source is None and "form was not filled correctly" in bad.reason


def test_an_init_on_or_outside_its_bounds_starts_in_the_middle(space):
    """Small models write init = lower: the form is a starting point, the fit decides."""
    source, _ = structured.fill(space, form(new_terms=[
        {"state": "omega", "expr": "-k * s.omega - q * s.omega ** 3", "parameters": [
            {"name": "k", "init": 0.01, "lower": 0.01, "upper": 10.0},
            {"name": "q", "init": 7.0, "lower": 2.0, "upper": 0.0}]}]))
    assert "self.k = self.parameter(init=0.316" in source  # geometric middle: 3 decades
    assert "self.q = self.parameter(init=1.0, bounds=(0.0, 2.0))" in source


def test_a_parameter_named_after_a_state_is_renamed(space):
    source, _ = structured.fill(space, form(new_terms=[
        {"state": "omega", "expr": "-omega * s.omega", "parameters": [
            {"name": "omega", "init": 0.1, "lower": 0.0, "upper": 1.0}]}]))
    check_source(source)
    assert "self.k_omega = self.parameter(" in source and "-self.k_omega * s.omega" in source
    with pytest.raises(structured.FormError, match="'torch' is not a new identifier"):
        structured.fill(space, form(new_terms=[{"state": "omega", "expr": "-torch * s.omega",
                                                "parameters": [{"name": "torch", "init": 0.1,
                                                                "lower": 0, "upper": 1}]}]))
