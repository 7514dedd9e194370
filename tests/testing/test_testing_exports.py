"""plait.testing's public surface: ``__all__`` matches the real exports, all documented."""

import inspect

import plait.testing


def test_all_matches_the_public_names() -> None:
    public = {name for name in vars(plait.testing) if not name.startswith("_")}
    assert set(plait.testing.__all__) == public
    assert list(plait.testing.__all__) == sorted(plait.testing.__all__)


def test_every_public_name_is_documented() -> None:
    for name in plait.testing.__all__:
        obj = getattr(plait.testing, name)
        assert inspect.getdoc(obj), name
        for member_name, member in vars(obj).items() if inspect.isclass(obj) else ():
            if not member_name.startswith("_") and callable(member):
                assert inspect.getdoc(member), f"{name}.{member_name}"
