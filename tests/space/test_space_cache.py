"""Design spaces cached on disk: the cached space is the space TVM builds; a bad file is rebuilt, never trusted."""

from __future__ import annotations

import json

from raydgp.space.space_cache import cached_space, space_file


def test_the_cached_space_is_the_built_one_and_a_bad_file_is_rebuilt(tmp_path, small_task, small_space, monkeypatch):
    import raydgp.space.metaschedule as msmod

    built = []
    real = msmod.build_space

    def counting(task):
        built.append(task.name)
        return real(task)

    monkeypatch.setattr(msmod, "build_space", counting)
    first = cached_space(small_task, tmp_path)
    assert built == [small_task.name] and first == small_space
    path = space_file(small_task, tmp_path)
    assert json.loads(path.read_text())["workload"]["key"] == small_task.workload.key
    again = cached_space(small_task, tmp_path)  # from the file: not built again, the same space
    assert built == [small_task.name] and again == small_space and again.size == small_space.size
    for bad in ("{torn", json.dumps({**small_space.to_json(), "workload": {**small_space.workload.to_json(),
                                                                             "key": "another-workload"}})):
        path.write_text(bad)
        assert cached_space(small_task, tmp_path) == small_space
        assert json.loads(path.read_text())["workload"]["key"] == small_task.workload.key  # rewritten
    assert len(built) == 3
    # another target is another file
    other = type(small_task)(small_task.name, small_task.mod, small_task.workload,
                             {**dict(small_task.target), "num-cores": 1})
    assert space_file(other, tmp_path) != path


def test_a_cache_that_cannot_be_written_still_gives_the_space_and_says_so(tmp_path, small_task, small_space,
                                                                          monkeypatch, caplog):
    import raydgp.space.space_cache as sc

    def refuse(path, data, **kw):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(sc, "write_json_atomic", refuse)
    with caplog.at_level("WARNING", logger="raydgp.space"):
        assert cached_space(small_task, tmp_path) == small_space
    assert not space_file(small_task, tmp_path).exists()
    assert any("could not keep the design space" in r.getMessage() and "RAYDGP_CACHE" in r.getMessage()
               for r in caplog.records)
