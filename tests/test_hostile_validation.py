"""Part of the hostile-input suite (issue #29): configs that the schema used to accept and that then crashed or
hung deep inside a stage.

* class B, validation gaps: unknown keys at any level (Snakemake, CLI, Python) are refused naming the nearest
  known key; every integer has a real bound; whole-number floats are read as integers; seeds fit a 32-bit
  generator; a CSV separator is one byte; a pattern's ``$`` is the end of the value;
* class C2, YAML anchors: a few hundred bytes of nested aliases expand to billions of values; validation
  bounds its work (a budget of values and of depth, and no cycles) before the schema walks the config.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import REPO, run_snakemake
from test_settings import _config  # the default config with a__b__c changes

from llara.settings import MAX_DEPTH, MAX_VALUES, ConfigError, check_settings, schema, validate_config



def _refused(config: dict, key: str) -> str:
    """The one-line message validate_config gives for ``config``, which must name ``key``."""
    with pytest.raises(ConfigError, match=r"^config key " + re.escape(key) + r":") as e:
        validate_config(config)
    assert "\n" not in str(e.value)
    return str(e.value)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from llara.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err.strip()


# ====================================================================================== B: unknown keys
class TestUnknownKeys:
    """B1: a misspelled key is refused everywhere, naming it and the nearest known key."""

    @pytest.mark.parametrize("key,near", [("sede", "seed"), ("sedds", "seeds"), ("tunes", "tune")])
    def test_top_level_python(self, key, near):
        msg = _refused({**_config(), key: 7}, key)
        assert f"did you mean {near!r}" in msg and "expected one of: data, datasets" in msg
        with pytest.raises(ConfigError, match=rf"^config key {key}: unknown key \(did you mean {near!r}\?\)"):
            check_settings({key: 7})

    def test_nested_keys_name_the_nearest(self):
        assert "did you mean 'max_history'" in _refused(_config(data__max_histroy=5), "data.max_histroy")
        assert "did you mean 'source'" in _refused(_config(datasets={"lastfm": {"sorce": "llara"}}),
                                                   "datasets.lastfm.sorce")
        assert "did you mean 'epochs'" in _refused(_config(tune__variants={"v": {"epoch": 2}}), "tune.variants.v.epoch")
        msg = _refused(_config(data__zzz=1), "data.zzz")  # no near key: the known ones only
        assert "did you mean" not in msg and "expected one of: candidate_sets, max_history" in msg

    def test_cli(self, tiny_data, tmp_path, capsys):
        rc, err = _cli(["seqrec", "sasrec", str(tiny_data), str(tmp_path / "out"), "--set", "hiden_size=8"], capsys)
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "config key seqrec.sasrec.hiden_size: unknown key (did you mean 'hidden_size'?)" in err
        assert not (tmp_path / "out").exists()

    def test_snakemake(self, tmp_path):
        """`--config sedds=[42,43]` was silently ignored: the run went on with one seed."""
        proc = run_snakemake(tmp_path, [], "results/lastfm/sasrec/metrics.json", "-n", "--config", "sedds=[42,43]",
                             check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "config key sedds: unknown key (did you mean 'seeds'?)" in out
        assert not (tmp_path / "results").exists()


# ===================================================================================== B: numbers
def _integer_schemas(node, path=()):
    """(schema path, subschema) of every subschema of the config schema that admits integers."""
    if isinstance(node, dict):
        types = node.get("type")
        if "integer" in ([types] if isinstance(types, str) else types or []):
            yield path, node
        for k, v in node.items():
            yield from _integer_schemas(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _integer_schemas(v, (*path, i))


class TestNumbers:
    """B2: every integer has a finite bound; whole-number floats are integers; seeds fit a 32-bit generator."""

    def test_every_integer_key_has_a_maximum(self):
        found = list(_integer_schemas(schema()))
        assert len(found) > 30
        unbounded = [".".join(map(str, p)) for p, s in found if "maximum" not in s]
        assert not unbounded, f"integer keys without a maximum: {unbounded}"

    @pytest.mark.parametrize("changes,key", [
        ({"data__candidate_sets": 1_000_000_000}, "data.candidate_sets"),  # filled memory
        ({"data__n_candidates": 10**6}, "data.n_candidates"),
        ({"data__max_history": 10**6, "data__min_history": 3}, "data.max_history"),
        ({"seqrec__sasrec__hidden_size": 10**7}, "seqrec.sasrec.hidden_size"),
        ({"seqrec__gru4rec__max_len": 10**8}, "seqrec.gru4rec.max_len"),
        ({"seqrec__caser__n_h": 10**6}, "seqrec.caser.n_h"),
        ({"seqrec__overrides": {"lastfm": {"sasrec": {"batch_size": 10**9}}}}, "seqrec.overrides.lastfm.sasrec.batch_size"),
        ({"evaluate__bootstrap__n_resamples": 10**12}, "evaluate.bootstrap.n_resamples"),
        ({"evaluate__max_rows": 2**70}, "evaluate.max_rows"),
        ({"tune__lora": {"r": 10**6}}, "tune.lora.r"),
        ({"tune__variants": {"v": {"micro_batch_size": 10**6}}}, "tune.variants.v.micro_batch_size"),
        ({"seed": 2**64}, "seed"),  # overflowed torch.manual_seed in the seqrec job
        ({"seed": 2**32}, "seed"),
        ({"seeds": [42, 2**40]}, "seeds.1"),
        ({"seeds": ["42", "18446744073709551616"]}, "seeds.1"),  # `--config seeds=[...]` gives strings
    ])
    def test_absurd_values_are_refused(self, changes, key):
        msg = _refused(_config(**changes), key)
        assert "greater than the maximum" in msg

    def test_whole_number_floats_become_integers(self):
        c = validate_config(_config(seed=7.0, data__max_history=10.0, tune__lora={"r": 8.0},
                                    tune__variants={"v": {"epochs": 2.0}},
                                    seqrec__overrides={"lastfm": {"sasrec": {"hidden_size": 32.0, "n_heads": 2.0}}},
                                    evaluate__max_rows=5.0))
        values = [c["seed"], c["data"]["max_history"], c["tune"]["lora"]["r"], c["tune"]["variants"]["v"]["epochs"],
                  c["seqrec"]["overrides"]["lastfm"]["sasrec"]["hidden_size"], c["evaluate"]["max_rows"]]
        assert values == [7, 10, 8, 2, 32, 5] and all(type(v) is int for v in values)
        assert type(c["tune"]["lr"]) is float  # numbers stay numbers
        _refused(_config(data__max_history=10.5), "data.max_history")
        _refused(_config(seed=float("inf")), "seed")

    def test_digit_string_seeds_become_integers(self):
        c = validate_config(_config(seeds=["42", "43"]))
        assert c["seeds"] == [42, 43] and all(type(s) is int for s in c["seeds"])
        _refused(_config(seeds=["42", "4x"]), "seeds.1")
        _refused(_config(seeds=["42", 42]), "seeds")  # the same seed twice
        _refused(_config(seed="42"), "seed")  # only seeds takes digit strings (what --config gives for a list)

    def test_python_api_gets_integers(self):
        from llara.data.preprocess import DataConfig
        from llara.seqrec import resolve_hparams

        hp = resolve_hparams("sasrec", {"hidden_size": 64.0, "max_epochs": 1.0})
        assert type(hp["hidden_size"]) is int and type(hp["max_epochs"]) is int
        assert type(DataConfig.from_dict({"max_history": 10.0}).max_history) is int
        assert type(DataConfig(max_history=10.0).max_history) is int  # built directly, too
        from llara.llm.train import TuneConfig

        cfg = TuneConfig(epochs=2.0, micro_batch_size=4.0)
        cfg.check()
        assert type(cfg.epochs) is int and type(cfg.micro_batch_size) is int and type(cfg.lr) is float

    def test_seqrec_cli_whole_number_float(self, tiny_data, tmp_path, capsys):
        """`--set hidden_size=8.0` failed with a TypeError naming no key; it is the integer 8."""
        rc, err = _cli(["seqrec", "gru4rec", str(tiny_data), str(tmp_path / "out"), "--set", "hidden_size=8.0",
                        "--set", "max_epochs=1.0", "--no-progress", "--threads", "1"], capsys)
        assert rc == 0, err
        assert (tmp_path / "out" / "metrics.json").is_file()

    @pytest.mark.parametrize("argv,key", [
        (["--seed", str(2**64)], "seed"),
        (["--set", "hidden_size=" + "9" * 5000], "seqrec.sasrec.hidden_size"),  # too long for int(): not a traceback
        (["--set", "max_len=1e300"], "seqrec.sasrec.max_len"),
    ])
    def test_seqrec_cli_refuses(self, argv, key, tiny_data, tmp_path, capsys):
        rc, err = _cli(["seqrec", "sasrec", str(tiny_data), str(tmp_path / "out"), *argv], capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and f"config key {key}:" in err, err[:300]
        assert not (tmp_path / "out").exists()


# ===================================================================================== B: strings
def _own(**entry) -> dict:
    ds = {"source": "interactions", "interactions": "a.csv", "items": "b.csv", "domain": "movie", **entry}
    return _config(datasets={"mine": ds}, report__datasets=["mine"])


class TestStrings:
    """B2: a separator is one byte; a pattern's ``$`` does not let a final newline through."""

    @pytest.mark.parametrize("sep", ["§", "é", "\u2028", ";;", '"', "\n", "\r", "\x00", ""])
    def test_sep_must_be_one_byte(self, sep):
        msg = _refused(_own(sep=sep), "datasets.mine.sep")
        assert "one ASCII character" in msg or "is too short" in msg

    @pytest.mark.parametrize("sep", ["§", "é", "\x00", '"'])
    def test_sep_through_the_preprocess_cli_path(self, sep):
        """``llara preprocess --dataset-config`` reads the entry without the whole config's schema: the data
        stage's own check gives the same answer (a polars traceback before)."""
        from llara.data.datasets import DatasetConfigError, user_files

        with pytest.raises(DatasetConfigError, match=r"datasets.mine.sep: expected one ASCII character"):
            user_files("mine", {"source": "interactions", "interactions": "i.csv", "items": "t.csv", "sep": sep})

    @pytest.mark.parametrize("sep", [",", "\t", ";", "|", " ", "\x01", None])
    def test_good_separators(self, sep):
        validate_config(_own(sep=sep))

    @pytest.mark.parametrize("changes,key", [
        ({"datasets": {"lastfm\n": {"source": "llara"}}, "report__datasets": ["lastfm"]}, "datasets"),
        ({"llm__name": "tiny\n"}, "llm.name"),
        ({"llm__gguf_file": "model.gguf\n"}, "llm.gguf_file"),
        ({"tune__variants": {"v\n": {}}}, "tune.variants"),
        ({"download__extra_sha256": {"hetrec2011-lastfm-2k.zip": "0" * 64 + "\n"}},
         "download.extra_sha256.hetrec2011-lastfm-2k.zip"),
    ])
    def test_final_newline_is_not_the_end(self, changes, key):
        _refused(_config(**changes), key)


# ============================================================================== C2: YAML anchors
def _anchor_yaml(kind: str, width: int = 9, depth: int = 9) -> str:
    """Nested YAML anchors: each level repeats the previous one ``width`` times (``width ** depth`` leaves)."""
    first = ", ".join(["lol"] * width) if kind == "list" else ", ".join(f"k{i}: lol" for i in range(width))
    lines = [f"l0: &l0 {'[' if kind == 'list' else '{'}{first}{']' if kind == 'list' else '}'}"]
    for d in range(1, depth):
        items = ", ".join([f"*l{d - 1}"] * width) if kind == "list" else ", ".join(f"k{i}: *l{d - 1}" for i in range(width))
        lines.append(f"l{d}: &l{d} {'[' if kind == 'list' else '{'}{items}{']' if kind == 'list' else '}'}")
    return "\n".join(lines) + "\n"


def _run_capped(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with 2 GiB of address space and a time limit (a hang fails the test)."""
    prelude = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


class TestYamlAnchors:
    """C2: validation walks at most MAX_VALUES values, MAX_DEPTH levels and no cycle, whatever the aliases."""

    @pytest.mark.parametrize("kind", ["list", "dict"])
    def test_nested_anchors_are_refused_quickly(self, kind):
        bomb = _anchor_yaml(kind)
        assert len(bomb.encode()) < 1024  # under a kilobyte; 9**9 = 387 million values once expanded
        code = f"""
            import time, yaml
            from llara.settings import ConfigError, validate_config
            config = yaml.safe_load((__import__("pathlib").Path("config/config.yaml")).read_text())
            bomb = yaml.safe_load({bomb!r})
            config["tune"]["lora"]["target_modules"] = bomb["l8"]  # under a key the schema walks
            t = time.perf_counter()
            try:
                validate_config(config)
            except ConfigError as e:
                print("REFUSED", round(time.perf_counter() - t, 2), e)
        """
        proc = _run_capped(code)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith("REFUSED"), proc.stdout
        assert "config key tune.lora.target_modules" in proc.stdout
        assert f"expands to more than {MAX_VALUES} values (YAML anchors and aliases" in proc.stdout
        assert float(proc.stdout.split()[1]) < 5

    def test_anchors_in_a_stage_section(self):
        bomb = yaml.safe_load(_anchor_yaml("list", depth=7))
        with pytest.raises(ConfigError, match=r"^config key tune\.lora\.target_modules[.0-9]*: the config expands"):
            check_settings({"tune": {"lora": {"target_modules": bomb["l6"]}}})

    def test_an_alias_inside_its_own_anchor(self):
        config = {**_config(), **yaml.safe_load("seeds: &s [1, *s]")}
        msg = _refused(config, "seeds.1")
        assert "contains itself" in msg
        loop = yaml.safe_load("a: &a {b: *a}")["a"]
        with pytest.raises(ConfigError, match="contains itself"):
            check_settings({"tune": {"variants": {"v": loop}}})

    def test_deep_nesting(self):
        deep: list = []
        for _ in range(MAX_DEPTH + 5):
            deep = [deep]
        with pytest.raises(ConfigError, match=rf"nested deeper than {MAX_DEPTH} levels"):
            validate_config(_config(tune__lora={"target_modules": deep}))

    def test_shared_but_small_aliases_pass(self):
        """Anchors used as intended (one node shared by a few keys) are fine: only the expanded size counts."""
        config = {**_config(), **yaml.safe_load(textwrap.dedent("""
            tune:
              lora: &lora {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}
              variants:
                small: {lora: *lora, epochs: 2}
                text_small: {lora: *lora, representation: text}
        """))}
        validate_config(config)
        assert config["tune"]["variants"]["small"]["lora"]["r"] == 4
        shared = {"lora": {"r": 4, "target_modules": ["q_proj"] * 50}}
        validate_config(_config(tune__variants={f"v{i}": shared for i in range(500)}))  # one dict, 500 uses

    def test_snakemake_refuses_a_list_anchor_bomb(self, tmp_path):
        """Through `snakemake --configfile`: Snakemake keeps list aliases shared, the Snakefile's validation
        refuses the config before any job. (Mapping aliases are copied out by Snakemake's own config merge,
        before the Snakefile runs: see docs/guarantees.md.)"""
        cfg = tmp_path / "bomb.yaml"
        cfg.write_text(_anchor_yaml("list") + "tune: {lora: {target_modules: *l8}}\n")
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "wd"),
               "--cores", "1", "-n", "results/lastfm/sasrec/metrics.json", "--configfile", str(cfg)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "the config expands to more than" in out, out[-2000:]
        assert not (tmp_path / "wd" / "results").exists()
