"""The allow-list file (DYNAMIC_WHITELIST_ENABLED): its parsing, re-reading and the authenticator's check."""

import logging
import os
import unicodedata

import pytest
from jupyterhub import orm
from tornado import web
from traitlets.config import Config

from mlhubspawner import allowlist
from mlhubspawner.allowlist import AllowListError, AllowListFile, parse_allow_list
from mlhubspawner.auth import AllowListConfigError, NativeAuthenticator

LOG = logging.getLogger("test-allow-list")


@pytest.fixture
def auth_rules():
    """The normalization and validation of ML Hub's authenticator (no database needed for these)."""
    auth = NativeAuthenticator(add_new_table=False)
    return auth.normalize_username, auth.validate_username


def parse(text, auth_rules):
    return parse_allow_list(text, *auth_rules)


# ---- the file's format ------------------------------------------------------------------------


def test_one_name_a_line_with_blank_lines_comments_and_case(auth_rules):
    text = "# the ML team\n\nAlice\n  bob  \r\ncarol   # the PI\n\t\n#dave\n"
    result = parse(text, auth_rules)
    assert result.names == {"alice", "bob", "carol"}
    assert result.ignored == ()


def test_a_byte_order_mark_and_windows_line_ends_are_no_part_of_a_name(tmp_path, auth_rules):
    path = tmp_path / "allow.txt"
    path.write_bytes("\ufeffalice\r\nbob\r\n".encode())
    assert AllowListFile(str(path), *auth_rules, LOG).load().names == {"alice", "bob"}


def test_lines_that_are_not_one_valid_name_are_ignored_and_reported(auth_rules):
    text = "alice bob\nx,y\na/b\nok\n" + "z" * 129 + "\n"
    result = parse(text, auth_rules)
    assert result.names == {"ok"}
    assert [number for number, _ in result.ignored] == [1, 2, 3, 5]
    assert "one name a line" in result.ignored[0][1]
    assert "not a valid username" in result.ignored[1][1]


@pytest.mark.parametrize("line", ["*", ".*", "ali.e", "^alice$", "[a-z]*", "alice|bob", "%"])
def test_wildcards_and_regular_expressions_are_literal_names(auth_rules, line):
    names = parse(f"{line}\n", auth_rules).names
    assert "alice" not in names and "bob" not in names
    assert names <= {line}  # a literal user called that, if the name is valid at all


def test_look_alike_names_are_other_users(auth_rules):
    normalize, _ = auth_rules
    names = parse("alice\njosé\n", auth_rules).names
    for look_alike in (
        "ａlice",  # fullwidth a
        "аlice",  # Cyrillic a
        unicodedata.normalize("NFD", "josé"),  # e + combining accent
        "alice\u200b",  # zero-width space: not even a valid username
    ):
        assert normalize(look_alike) not in names, look_alike
    assert normalize("ALICE") in names  # upper case is the same user: the authenticator lower-cases
    assert normalize(unicodedata.normalize("NFC", "josé")) in names


# ---- reading it again when it changes --------------------------------------------------------


def test_an_edit_takes_effect_at_the_next_load(tmp_path, auth_rules):
    path = tmp_path / "allow.txt"
    path.write_text("alice\n")
    allow = AllowListFile(str(path), *auth_rules, LOG)
    assert allow.load().names == {"alice"}
    path.write_text("alice\nbob\n")
    assert allow.load().names == {"alice", "bob"}
    path.write_text("bob\n")
    assert allow.load().names == {"bob"}


def test_a_same_size_rewrite_with_the_same_time_is_seen_while_recent(tmp_path, auth_rules):
    path = tmp_path / "allow.txt"
    path.write_text("alice\n")
    stamp = os.stat(path).st_mtime_ns
    allow = AllowListFile(str(path), *auth_rules, LOG, clock=lambda: stamp / 1e9 + 0.5)
    assert allow.load().names == {"alice"}
    path.write_text("bobby\n")  # same size, and the file system's clock did not move
    os.utime(path, ns=(stamp, stamp))
    assert allow.load().names == {"bobby"}


def test_an_unchanged_file_is_not_read_again(tmp_path, auth_rules, monkeypatch):
    path = tmp_path / "allow.txt"
    path.write_text("alice\n")
    stamp = os.stat(path).st_mtime_ns
    allow = AllowListFile(str(path), *auth_rules, LOG, clock=lambda: stamp / 1e9 + 60)
    assert allow.load().names == {"alice"}
    opened = []
    monkeypatch.setattr(allowlist, "open", lambda *a, **k: opened.append(a) or open(*a, **k), raising=False)
    for _ in range(5):
        assert allow.load().names == {"alice"}
    assert opened == []
    path.write_text("alice\nbob\n")
    assert allow.load().names == {"alice", "bob"}
    assert len(opened) == 1


def test_a_symlink_is_followed_and_its_new_target_read(tmp_path, auth_rules):
    """A Kubernetes ConfigMap: the mounted file is a link, swapped atomically on update."""
    (tmp_path / "v1").write_text("alice\n")
    (tmp_path / "v2").write_text("bob\n")
    link = tmp_path / "allow.txt"
    link.symlink_to(tmp_path / "v1")
    allow = AllowListFile(str(link), *auth_rules, LOG)
    assert allow.load().names == {"alice"}
    (tmp_path / "next").symlink_to(tmp_path / "v2")
    os.replace(tmp_path / "next", link)
    assert allow.load().names == {"bob"}
    (tmp_path / "v2").unlink()  # dangling
    with pytest.raises(AllowListError, match="No such file"):
        allow.load()


# ---- unreadable files fail closed ---------------------------------------------------------------


def test_unreadable_files_are_errors_never_an_empty_or_stale_list(tmp_path, auth_rules):
    path = tmp_path / "allow.txt"
    allow = AllowListFile(str(path), *auth_rules, LOG)
    with pytest.raises(AllowListError, match="No such file"):
        allow.load()
    path.write_text("alice\n")
    assert allow.load().names == {"alice"}
    path.unlink()
    with pytest.raises(AllowListError, match="No such file"):  # not the list read before
        allow.load()
    path.write_bytes(b"alice\n\xff\xfe\n")
    with pytest.raises(AllowListError, match="not UTF-8"):
        allow.load()
    path.unlink()
    path.mkdir()
    with pytest.raises(AllowListError, match="directory"):
        allow.load()
    path.rmdir()
    with open(path, "wb") as f:
        f.truncate(allowlist.MAX_BYTES + 1)
    with pytest.raises(AllowListError, match="larger than"):
        allow.load()


# ---- the authenticator --------------------------------------------------------------------------


@pytest.fixture
def db():
    session = orm.new_session_factory("sqlite:///:memory:")()
    yield session
    session.close()


def authenticator(db, path, **extra):
    config = Config()
    config.NativeAuthenticator.allowed_users_file = str(path)
    config.NativeAuthenticator.allow_all = False
    config.Authenticator.admin_users = {"admin"}
    for key, value in extra.items():
        setattr(config.NativeAuthenticator, key, value)
    return NativeAuthenticator(config=config, _deprecated_db_session=db)


def refusal(auth, name):
    with pytest.raises(web.HTTPError) as refused:
        auth.check_allowed(name, {"name": name})
    assert refused.value.status_code == 403
    return refused.value.log_message


def test_listed_users_and_admins_may_log_in_others_are_told_why_not(db, tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("Alice\n")
    auth = authenticator(db, path)
    assert auth.check_allowed("alice", {"name": "alice"})
    assert auth.check_allowed("admin", {"name": "admin"})  # not listed: admins always may
    assert refusal(auth, "bob") == (
        "bob is not on the list of users allowed on this hub: ask an administrator to add you."
    )
    path.write_text("alice\nbob\n")
    assert auth.check_allowed("bob", {"name": "bob"})
    path.write_text("bob\n")
    assert "not on the list" in refusal(auth, "alice")


def test_users_made_admin_in_jupyterhub_may_log_in(db, tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("")
    db.add(orm.User(name="root2", admin=True))
    db.add(orm.User(name="plain", admin=False))
    db.commit()
    auth = authenticator(db, path)
    assert auth.check_allowed("root2", {"name": "root2"})
    assert "not on the list" in refusal(auth, "plain")


def test_a_missing_file_lets_only_admins_in_and_says_so(db, tmp_path, caplog):
    auth = authenticator(db, tmp_path / "nowhere.txt")
    assert auth.check_allowed("admin", {"name": "admin"})
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        message = refusal(auth, "alice")
    assert message == "The list of users allowed on this hub cannot be read: ask an administrator."
    assert "only admins can log in until it is fixed" in caplog.text
    assert "nowhere.txt" in caplog.text


def test_allowed_users_still_count_and_existing_users_are_not_allowed_by_default(db, tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("alice\n")
    auth = authenticator(db, path, allowed_users={"carol"})
    assert auth.allow_existing_users is False  # a name removed from the file keeps its user out
    assert auth.check_allowed("carol", {"name": "carol"})
    assert "not on the list" in refusal(auth, "dave")


def test_the_file_with_allow_all_is_a_startup_error(db, tmp_path):
    with pytest.raises(AllowListConfigError, match="allowed_users_file.*allow_all = False"):
        authenticator(db, tmp_path / "allow.txt", allow_all=True)


def test_without_the_file_nothing_changes(db):
    config = Config()
    config.Authenticator.allow_all = True
    auth = NativeAuthenticator(config=config, _deprecated_db_session=db)
    assert auth.allow_list is None
    assert auth.check_allowed("anyone", {"name": "anyone"})
