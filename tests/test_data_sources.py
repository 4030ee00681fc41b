"""Real-dataset sources: answer extraction, JSONL/parquet readers and errors, TFDS offline."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module

from r1jax.data import (
    DataError,
    gsm8k_answer,
    last_boxed,
    load_dataset,
    make_task,
    read_file,
    write_jsonl,
    write_parquet,
)
from r1jax.data.sources import convert_rows, schema_for_tfds
from r1jax.data.tfds_io import local_tfds_name, write_tfrecords

tfds.disable_progress_bar()


def test_gsm8k_answer():
    assert gsm8k_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert gsm8k_answer("so $1,234,500 in all.\n####  1,234,500 ") == "1234500"
    assert gsm8k_answer("#### -3.5") == "-3.5"
    assert gsm8k_answer("no marker 42") is None


@pytest.mark.parametrize(
    "text, want",
    [
        ("so $x = \\boxed{5}$.", "5"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("$\\boxed{x^{2}+\\sqrt{y_{1}}}$", "x^{2}+\\sqrt{y_{1}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),
        ("answer: \\fbox{7}", "7"),
        ("$\\boxed 3$.", "3"),
        ("\\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, want):
    assert last_boxed(text) == want


def test_schemas_on_hand_made_rows():
    rows = [("r0", {"question": "Q?", "answer": "Step <<2*3=6>>6\n#### 1,006"})]
    assert convert_rows(rows, "gsm8k", "gsm8k/test") == [
        {
            "id": "gsm8k/test/0",
            "task": "gsm8k",
            "question": "Q?",
            "answer": "1006",
            "solution": "Step <<2*3=6>>6\n#### 1,006",
        }
    ]
    row = {
        "problem": "P",
        "solution": "So \\boxed{\\dfrac{3}{4}}.",
        "level": "Level 5",
        "type": "Algebra",
    }
    (ex,) = convert_rows([("r", row)], "math", "math/train")
    assert (ex["answer"], ex["level"], ex["type"], ex["question"]) == (
        "\\dfrac{3}{4}",
        "Level 5",
        "Algebra",
        "P",
    )
    row = {
        "problem": "P",
        "solution": "S",
        "answer": "\\pi",
        "subject": "Geometry",
        "level": 3,
        "unique_id": "test/geometry/1.json",
    }
    (ex,) = convert_rows([("r", row)], "math500", "math500/test")
    assert ex["id"] == "test/geometry/1.json" and ex["answer"] == "\\pi" and ex["level"] == 3
    h4 = {"id": 60, "problem": "P", "solution": "S", "answer": "204", "url": "u", "year": 2024}
    mj = {"ID": "2024-I-1", "Problem": "P", "Solution": "S", "Answer": 204}
    a, b = convert_rows([("a", h4), ("b", mj)], "aime2024", "aime2024/test")
    assert (a["id"], a["answer"], a["year"]) == ("60", "204", 2024)
    assert (b["id"], b["answer"], b["question"], b["solution"]) == ("2024-I-1", "204", "P", "S")
    with pytest.raises(DataError, match=r"r: field 'solution': no complete \\boxed"):
        convert_rows([("r", {"problem": "P", "solution": "no box"})], "math", "m")


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "gsm.jsonl"
    good = json.dumps({"question": "q", "answer": "#### 1"})
    path.write_text(f"{good}\n\n{json.dumps({'question': 'q'})}\n")
    with pytest.raises(DataError) as e:
        read_file(path, "gsm8k")
    assert str(e.value) == f"{path}, line 3: field 'answer': missing (gsm8k schema)"
    path.write_text(f"{good}\n{{'question': 1}}\n")
    with pytest.raises(DataError, match=rf"{path}, line 2: invalid JSON: .*column 2"):
        read_file(path)
    path.write_text(f"{good}\n{json.dumps({'question': 'q', 'answer': None})}\n")
    with pytest.raises(DataError, match=rf"{path}, line 2: field 'answer': missing"):
        read_file(path)
    path.write_text(f"{good}\n{json.dumps({'question': ['q'], 'answer': '1'})}\n")
    with pytest.raises(DataError, match=rf"{path}, line 2: field 'question': expected a string"):
        read_file(path)


def test_parquet_round_trip_and_errors(tmp_path):
    examples = list(make_task("countdown", test_size=20).split("test"))
    write_parquet(tmp_path / "test.parquet", examples)
    write_jsonl(tmp_path / "test.jsonl", examples)
    assert load_dataset(f"parquet:{tmp_path}/{{split}}.parquet", "test") == examples
    assert load_dataset(f"jsonl:{tmp_path}", "test") == examples
    bad = [{"question": "q", "answer": "1"}, {"question": "q", "answer": None}]
    write_parquet(tmp_path / "bad.parquet", bad)
    with pytest.raises(DataError, match=rf"{tmp_path}/bad.parquet, row 1: field 'answer'"):
        read_file(tmp_path / "bad.parquet")


def test_named_source_from_hub_parquet_layout(tmp_path):
    # The hub's layout for openai/gsm8k: main/train-00000-of-00001.parquet, main/test-...
    (tmp_path / "main").mkdir()
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}00"} for i in range(3)]
    write_parquet(tmp_path / "main" / "test-00000-of-00001.parquet", rows)
    write_parquet(tmp_path / "main" / "train-00000-of-00001.parquet", rows[:1])
    ds = load_dataset("gsm8k", "test", path=str(tmp_path))
    assert [(ex["id"], ex["answer"]) for ex in ds] == [
        (f"gsm8k/test/{i}", f"{i}00") for i in range(3)
    ]
    with pytest.raises(FileNotFoundError, match="no 'validation' data"):
        load_dataset("gsm8k", "validation", path=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k'.*jsonl:PATH"):
        load_dataset("gsm9k")


# ----------------------------------------------------------------------------------------- TFDS


def _prepare_hub_like(data_dir, name, config, features, rows, file_format="array_record"):
    """Writes a TFDS data_dir laid out as `tfds.builder('huggingface:...')` would prepare it."""

    class HubLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features), disable_shuffling=True
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(r) for split, r in rows.items()}

        def _generate_examples(self, split_rows):
            yield from enumerate(split_rows)

    HubLike.name = name
    builder = HubLike(data_dir=data_dir, config=config, file_format=file_format)
    builder.download_and_prepare()
    return builder


GSM8K_ROWS = {"test": [{"question": f"q{i}", "answer": f"w\n#### {i},000"} for i in range(4)]}
TEXT = tfds.features.Text()


def test_tfds_huggingface_namespace_offline(tmp_path):
    assert local_tfds_name("huggingface:openai/gsm8k/main") == "openai__gsm8k/main"
    assert local_tfds_name("huggingface:HuggingFaceH4/MATH-500") == "huggingfaceh4__math_500"
    assert schema_for_tfds("huggingface:Maxwell-Jia/AIME_2024") == "aime2024"
    assert schema_for_tfds("huggingface:someone/else") == "canonical"
    features = {"question": TEXT, "answer": TEXT}
    _prepare_hub_like(tmp_path, "openai__gsm8k", "main", features, GSM8K_ROWS)
    want = [("q0", "0000"), ("q1", "1000"), ("q2", "2000"), ("q3", "3000")]
    for spec in (
        "gsm8k",
        "tfds:huggingface:openai/gsm8k/main",
        "tfds:huggingface:openai__gsm8k/main",
    ):
        ds = load_dataset(spec, "test", data_dir=str(tmp_path))
        assert [(ex["question"], ex["answer"]) for ex in ds] == want, spec
        assert all(ex["task"] == "gsm8k" for ex in ds)
    # The schema can be overridden; the canonical one keeps the raw answer.
    ds = load_dataset("tfds:openai__gsm8k/main", "test", data_dir=str(tmp_path), schema="canonical")
    assert ds[1]["answer"] == "w\n#### 1,000" and ds[1]["id"] == "openai__gsm8k/main/test/1"
    with pytest.raises(ValueError, match="has no split 'train'; it has \\['test'\\]"):
        load_dataset("gsm8k", "train", data_dir=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match="'huggingface:HuggingFaceH4/MATH-500'.*not prepared"
    ):
        load_dataset("math500", "test", data_dir=str(tmp_path))


def test_tfds_numeric_fields_and_tfrecord_format(tmp_path):
    features = {
        "problem": TEXT,
        "solution": TEXT,
        "answer": TEXT,
        "subject": TEXT,
        "level": np.int64,
        "unique_id": TEXT,
    }
    rows = [
        {
            "problem": f"p{i}",
            "solution": "s",
            "answer": f"{i}",
            "subject": "Algebra",
            "level": i + 1,
            "unique_id": f"test/algebra/{i}.json",
        }
        for i in range(3)
    ]
    builder = _prepare_hub_like(tmp_path, "huggingfaceh4__math_500", None, features, {"test": rows})
    ds = load_dataset("math500", "test", data_dir=str(tmp_path))
    assert [(ex["id"], ex["level"], ex["answer"]) for ex in ds] == [
        (f"test/algebra/{i}.json", i + 1, str(i)) for i in range(3)
    ]
    assert type(ds[0]["level"]) is int
    # Re-store the same records as TFRecord (the `tfds build` default) and read them without TF.
    shard = next(builder.data_path.glob("*.array_record-*"))
    records = array_record_module.ArrayRecordReader(str(shard)).read_all()
    write_tfrecords(str(shard).replace(".array_record-", ".tfrecord-"), records)
    shard.unlink()
    info_path = builder.data_path / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "fileFormat": "tfrecord"}))
    assert load_dataset("math500", "test", data_dir=str(tmp_path)) == ds
