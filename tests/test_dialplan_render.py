"""`ivr dialplan render`: Asterisk config that ivr.asterisk parses back, using only the
emulator's applications, with the static fallback to the general queue.

The rendered dialplan is also *run* here by a small walker over ivr.asterisk's parsed
model and expression evaluator (Set/GotoIf/Goto/ExecIf/AGI/Queue/Dial), so the routing
on AGISTATUS and IVR_NEXT is checked, not just the text."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.asterisk.appargs import split_app_args
from ivr.asterisk.conf import find_category, load_conf, parse_conf
from ivr.asterisk.extensions import Dialplan, parse_extensions
from ivr.cli import main
from ivr.dialplan import load_definition
from ivr.dialplan.greeting import Greeting, static_greeting
from ivr.dialplan.render import render, source_version, version_marker
from ivr.dialplan.validate import file_prompt_lookup
from ivr.sim.expr import DictScope, substitute
from tests.test_dialplan_support import SHIPPED, prompts_for

EMULATOR_APPS = {
    "Answer", "NoOp", "Set", "AGI", "GotoIf", "Goto", "Gosub", "Return", "Queue", "Hangup",
    "Wait", "Playback", "Background", "Read", "ConfBridge", "Dial", "MixMonitor", "Ringing",
    "ExecIf",
}


@pytest.fixture(scope="module")
def rendered() -> tuple[str, dict[str, str]]:
    d = load_definition(SHIPPED)
    version = source_version(SHIPPED)
    return version, dict(render(d, version).files)


def dialplan_of(text: str) -> Dialplan:
    # without the site include (tested separately): the generated part alone
    body = "\n".join(x for x in text.splitlines() if not x.startswith("#include"))
    return parse_extensions(parse_conf(body, "<extensions.conf>"))


@dataclass
class Walk:
    """Runs the rendered dialplan for one call; AGI answers are scripted."""

    dp: Dialplan
    agi: list[dict[str, str]]
    keys: list[str] = field(default_factory=list)
    """The caller's key per dialplan Read ("" = none, "hangup")."""
    variables: dict[str, str] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    ready: dict[str, int] = field(default_factory=dict)
    """Queue → QUEUE_MEMBER(<queue>,ready) (default 1: a member is ready)."""

    def scope(self) -> DictScope:
        return DictScope(self.variables, {
            "CHANNEL": lambda arg: self.variables.get(f"CHANNEL({arg})", ""),
            "QUEUE_MEMBER": self._queue_member})

    def _queue_member(self, arg: str) -> str:
        queue, option = split_app_args(arg)[:2]
        assert option == "ready", arg
        return str(self.ready.get(queue, 1))

    def run(self, context: str, exten: str) -> list[str]:
        self.variables.update(self.dp.globals)
        self.variables.setdefault("CHANNEL(linkedid)", "1795883958.1")
        prio = 1
        for _ in range(300):
            p = self.dp.find(context, exten, prio)
            assert p is not None, f"no priority {prio} in {exten}@{context}"
            assert p.app in EMULATOR_APPS, p.app
            data = p.data if p.app in ("ExecIf", "GotoIf") else substitute(
                p.data, self.scope())
            nxt = prio + 1
            if p.app in ("Set", "ExecIf"):
                self._exec(p.app, data)
            elif p.app == "AGI":
                self.trace.append(f"AGI({data})")
                result = self.agi.pop(0) if self.agi else {"AGISTATUS": "FAILURE"}
                self.variables.update(result)
            elif p.app == "Read":
                self.trace.append(f"Read({data})")
                var, _, _ = data.partition(",")
                key = self.keys.pop(0) if self.keys else ""
                status = {"": "TIMEOUT", "hangup": "HANGUP"}.get(key, "OK")
                self.variables.update({var: "" if key == "hangup" else key,
                                       "READSTATUS": status})
            elif p.app == "GotoIf":
                cond, _, branches = p.data.partition("?")
                yes, _, no = branches.partition(":")
                value = substitute(cond, self.scope()).strip()
                target = yes if value not in ("", "0") else no
                if target:
                    where = target.split(",")
                    if len(where) == 3:
                        context, exten, target = where
                    found = self.dp.find(context, exten,
                                         int(target) if target.isdigit() else target)
                    assert found is not None, f"GotoIf to missing label {target}"
                    nxt = found.number
            elif p.app == "Goto":
                parts = split_app_args(data)
                if len(parts) == 3:
                    context, exten, label = parts
                else:
                    label = parts[-1]
                found = self.dp.find(context, exten, int(label) if label.isdigit() else label)
                assert found is not None, f"Goto to missing {data}"
                nxt = found.number
            elif p.app == "Playback":
                self.trace.append(f"Playback({data})")
            elif p.app in ("Queue", "Dial"):
                self.trace.append(f"{p.app}({data}) lang={self.variables.get('CHANNEL(language)')}")
                self.variables["QUEUESTATUS" if p.app == "Queue" else "DIALSTATUS"] = (
                    "TIMEOUT" if p.app == "Queue" else "NOANSWER")
            elif p.app == "Hangup":
                self.trace.append("Hangup")
                return self.trace
            prio = nxt
        raise AssertionError(f"dialplan loops: {self.trace}")

    def _exec(self, app: str, data: str) -> None:
        if app == "ExecIf":
            cond, _, rest = data.partition("?")
            if substitute(cond, self.scope()).strip() in ("", "0"):
                return
            inner_app, _, args = rest.partition("(")
            data = substitute(args[:-1], self.scope())
            if inner_app == "Playback":
                self.trace.append(f"Playback({data})")
                return
            assert inner_app == "Set"
        name, _, value = data.partition("=")
        self.variables[name.lstrip("_")] = value


def test_rendered_config_parses_back_with_ivr_asterisk(
    rendered: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    version, files = rendered
    out = tmp_path / "conf"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", out)
    cats = load_conf(out / "extensions.conf")  # follows the #include of the site file
    dp = parse_extensions(cats)
    # 12345: the recording notice alone before the queue (a shorter way to a person)
    greeting = {"12345": "zh/recording-notice",
                "12315": "zh/consumer-welcome&zh/lang-offer&zh/recording-notice"}
    assert {"from-pstn", "ivr-route", "agent-local", "outbound"} <= set(dp.contexts)
    assert dp.globals["IVR_DIALPLAN_VERSION"] == version
    assert dp.globals["IVR_GENERAL_QUEUE"] == "hotline"
    for number in ("12345", "12315", "12333", "8890"):
        first = dp.find("from-pstn", number, 1)
        assert first is not None and first.app == "NoOp"
        assert version_marker(version) in first.data
        ordered = dp.match("from-pstn", number).ordered()  # type: ignore[union-attr]
        agi = [p for p in ordered if p.app == "AGI"]
        reads = [p.data for p in ordered if p.app == "Read"]
        if number in greeting:  # zero navigation, a greeting that never changes: played here
            assert reads == [f"IVR_BARGE,{greeting[number]},1,,1,0.001"]
            query = (f"entry={number}&call=${{CHANNEL(linkedid)}}&barge=${{IVR_BARGE}}"
                     "&barge_status=${READSTATUS}")
        else:  # 12333: office hours decide what follows its greeting; 8890: a menu
            assert reads == []
            query = f"entry={number}&call=${{CHANNEL(linkedid)}}"
        # the FastAGI server, then (AGISTATUS=FAILURE, a backup set) the second one
        assert [p.data for p in agi] == [
            f"agi://${{IVR_AGI_HOST}}:${{IVR_AGI_PORT}}/ivr?{query}",
            f"agi://${{IVR_AGI_BACKUP_HOST}}:${{IVR_AGI_BACKUP_PORT}}/ivr?{query}"]
    used = {p.app for ctx in dp.contexts.values() for e in ctx.extensions for p in e.ordered()}
    assert used <= EMULATOR_APPS
    queues = load_conf(out / "queues.conf")
    hotline = find_category(queues, "hotline")
    assert hotline is not None and hotline.get("strategy") == "rrmemory"
    members = [i.value for i in hotline.items if i.key == "member"]
    assert members == [f"Local/{n}@agent-local/n" for n in range(1001, 1011)]
    assert {c.name for c in queues} == {"general", "hotline", "english", "cantonese",
                                        "enterprise", "consumer", "social"}
    assert files["extensions.conf"].startswith(
        f"; extensions.conf for the 12345 hotline IVR, {version_marker(version)}.")


def test_static_fallback_when_the_ivr_server_is_down(rendered: tuple[str, dict[str, str]]) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    trace = Walk(dp, agi=[{"AGISTATUS": "FAILURE"}]).run("from-pstn", "12333")
    assert trace == [
        "AGI(agi://127.0.0.1:4573/ivr?entry=12333&call=1795883958.1)",
        "Queue(hotline,ct,,,300) lang=zh",
        "Hangup",
    ]
    # after the greeting the dialplan played, whatever the caller keyed
    trace = Walk(dp, agi=[{"AGISTATUS": "FAILURE"}], keys=["9"]).run("from-pstn", "12315")
    assert trace == [
        "Read(IVR_BARGE,zh/consumer-welcome&zh/lang-offer&zh/recording-notice,1,,1,0.001)",
        "AGI(agi://127.0.0.1:4573/ivr?entry=12315&call=1795883958.1&barge=9&barge_status=OK)",
        "Queue(hotline,ct,,,300) lang=zh",
        "Hangup",
    ]


def test_caller_hanging_up_during_the_rendered_greeting_never_reaches_agi(
    rendered: tuple[str, dict[str, str]],
) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    walk = Walk(dp, agi=[{"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue"}], keys=["hangup"])
    assert walk.run("from-pstn", "12345") == [
        "Read(IVR_BARGE,zh/recording-notice,1,,1,0.001)",
        "Hangup",
    ]
    assert walk.agi  # the AGI answer was never asked for


def test_ivr_chooses_a_queue_language_and_priority(rendered: tuple[str, dict[str, str]]) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    walk = Walk(dp, agi=[{"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue", "IVR_QUEUE": "english",
                          "IVR_LANGUAGE": "en", "CHANNEL(language)": "en",
                          "IVR_PRIORITY": "10",
                          "IVR_PROMPT": "en/recording-notice&en/please-hold"}])
    walk.keys = ["9"]
    assert walk.run("from-pstn", "12345") == [
        "Read(IVR_BARGE,zh/recording-notice,1,,1,0.001)",
        "AGI(agi://127.0.0.1:4573/ivr?entry=12345&call=1795883958.1&barge=9&barge_status=OK)",
        "Playback(en/recording-notice&en/please-hold)",
        "Queue(english,ct,,,300) lang=en",
        "Hangup",
    ]
    assert walk.variables["QUEUE_PRIO"] == "10"
    assert walk.variables["IVR_LANGUAGE"] == "en"  # set as __IVR_LANGUAGE: follows the call


def test_queue_timeout_resumes_the_ivr_then_transfer(rendered: tuple[str, dict[str, str]]) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    walk = Walk(dp, agi=[
        {"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue", "IVR_QUEUE": "hotline",
         "IVR_RESUME": "missed", "IVR_PROMPT": "zh/please-hold"},
        {"AGISTATUS": "SUCCESS", "IVR_NEXT": "transfer", "IVR_TRANSFER": "110"},
    ])
    assert walk.run("from-pstn", "12345") == [
        "Read(IVR_BARGE,zh/recording-notice,1,,1,0.001)",
        "AGI(agi://127.0.0.1:4573/ivr?entry=12345&call=1795883958.1&barge=&barge_status=TIMEOUT)",
        "Playback(zh/please-hold)",
        "Queue(hotline,ct,,,300) lang=zh",
        "AGI(agi://127.0.0.1:4573/ivr?entry=12345&call=1795883958.1&resume=missed&lang=zh)",
        "Dial(Local/110@outbound,60) lang=zh",
        # not answered, nothing to resume: a person (the entry's operator queue)
        "Queue(hotline,ct,,,300) lang=zh",
        "Hangup",
    ]


def test_hold_prompt_is_played_only_when_no_member_is_ready(
    rendered: tuple[str, dict[str, str]],
) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    exit_ = {"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue", "IVR_QUEUE": "hotline",
             "IVR_PROMPT": "", "IVR_HOLD_PROMPT": "zh/please-hold"}
    ready = Walk(dp, agi=[dict(exit_)]).run("from-pstn", "12345")
    assert ready[2:] == ["Queue(hotline,ct,,,300) lang=zh", "Hangup"]  # rung at once
    busy = Walk(dp, agi=[dict(exit_)], ready={"hotline": 0}).run("from-pstn", "12345")
    assert busy[2:] == ["Playback(zh/please-hold)", "Queue(hotline,ct,,,300) lang=zh", "Hangup"]
    # a notice the IVR still owes (IVR_PROMPT) is played whoever is ready
    owed = Walk(dp, agi=[dict(exit_, IVR_PROMPT="en/recording-notice")]).run(
        "from-pstn", "12345")
    assert owed[2:] == ["Playback(en/recording-notice)", "Queue(hotline,ct,,,300) lang=zh",
                        "Hangup"]


def test_barge_in_keys_leave_the_queue_to_the_language_desk(
    rendered: tuple[str, dict[str, str]],
) -> None:
    files = rendered[1]
    queues = {c.name: c for c in parse_conf(files["queues.conf"])}
    assert queues["hotline"].get("context") == "ivr-queue-hotline"
    assert queues["english"].get("context") is None  # 9 would lead back to it
    dp = dialplan_of(files["extensions.conf"])
    assert sorted(e.name for e in dp.contexts["ivr-queue-hotline"].extensions) == ["8", "9"]
    # the IVR resumes the queue step in the key's language: its by_language queue
    walk = Walk(dp, agi=[{"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue", "IVR_QUEUE": "english",
                          "IVR_LANGUAGE": "en", "CHANNEL(language)": "en",
                          "IVR_PROMPT": "en/recording-notice"}],
                variables={"IVR_ENTRY": "12345", "IVR_QUEUE_STEP": "queue"})
    assert walk.run("ivr-queue-hotline", "9") == [
        "AGI(agi://127.0.0.1:4573/ivr?entry=12345&call=1795883958.1&resume=queue&lang=en)",
        "Playback(en/recording-notice)",
        "Queue(english,ct,,,300) lang=en",
        "Hangup",
    ]
    # the IVR unreachable: straight to the language's queue, in that language
    walk = Walk(dp, agi=[{"AGISTATUS": "FAILURE"}],
                variables={"IVR_ENTRY": "12345", "IVR_QUEUE_STEP": "queue",
                           "IVR_HOLD_PROMPT": "zh/please-hold"}, ready={"cantonese": 0})
    assert walk.run("ivr-queue-hotline", "8") == [
        "AGI(agi://127.0.0.1:4573/ivr?entry=12345&call=1795883958.1&resume=queue&lang=yue)",
        "Queue(cantonese,ct,,,300) lang=yue",
        "Hangup",
    ]
    # no queue step to resume (the static fallback's queue): the same, without the IVR
    walk = Walk(dp, agi=[], variables={"IVR_ENTRY": "12345", "IVR_QUEUE_STEP": ""})
    assert walk.run("ivr-queue-hotline", "9") == ["Queue(english,ct,,,300) lang=en", "Hangup"]


def test_unknown_queue_or_unknown_next_goes_to_a_person(
    rendered: tuple[str, dict[str, str]],
) -> None:
    dp = dialplan_of(rendered[1]["extensions.conf"])
    trace = Walk(dp, agi=[{"AGISTATUS": "SUCCESS", "IVR_NEXT": "queue",
                           "IVR_QUEUE": "nosuch"}]).run("from-pstn", "8890")
    assert trace[1] == "Queue(hotline,ct,,,300) lang=zh"
    trace = Walk(dp, agi=[{"AGISTATUS": "SUCCESS"}]).run("from-pstn", "12333")
    assert trace[1] == "Queue(hotline,ct,,,300) lang=zh"
    assert Walk(dp, agi=[{"AGISTATUS": "SUCCESS", "IVR_NEXT": "hangup",
                          "IVR_PROMPT": "zh/goodbye"}]).run(
        "from-pstn", "12345")[2:] == ["Playback(zh/goodbye)", "Hangup"]
    assert Walk(dp, agi=[{"AGISTATUS": "HANGUP"}]).run("from-pstn", "12345")[2:] == ["Hangup"]


def test_render_command_writes_the_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = prompts_for(SHIPPED, tmp_path / "prompts")
    out = tmp_path / "out"
    code = main(["dialplan", "render", str(SHIPPED), "--out", str(out), "--prompts",
                 str(prompts)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["extensions.conf", "musiconhold.conf",
                                                     "queues.conf"]
    assert version_marker(source_version(SHIPPED)) in (out / "extensions.conf").read_text()
    assert "wrote" in capsys.readouterr().err


def test_render_refuses_an_invalid_definition(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = tmp_path / "dp"
    shutil.copytree(SHIPPED, src)
    text = (src / "entries.yaml").read_text().replace("queue: consumer\n", "queue: consumr\n")
    (src / "entries.yaml").write_text(text)
    out = tmp_path / "out"
    code = main(["dialplan", "render", str(src), "--out", str(out), "--no-prompts"])
    assert code == 1
    assert not out.exists()
    assert "error: undefined queue 'consumr'" in capsys.readouterr().out


def test_greeting_files_follow_the_language_fallback_chain(tmp_path: Path) -> None:
    src = tmp_path / "dp"
    shutil.copytree(SHIPPED, src)
    text = (src / "entries.yaml").read_text(encoding="utf-8")
    (src / "entries.yaml").write_text(text.replace(
        '    language: zh\n    zero_navigation: true\n    operator: {queue: consumer}',
        '    language: yue\n    zero_navigation: true\n    operator: {queue: consumer}'),
        encoding="utf-8")
    prompts = prompts_for(src, tmp_path / "prompts")
    (prompts / "yue" / "lang-offer.wav").unlink()  # yue falls back to zh
    out = tmp_path / "out"
    assert main(["dialplan", "render", str(src), "--out", str(out), "--prompts",
                 str(prompts)]) == 0
    conf = (out / "extensions.conf").read_text(encoding="utf-8")
    assert ("exten => 12315,1," in conf and "same => n,Read(IVR_BARGE,yue/consumer-welcome&"
            "zh/lang-offer&yue/recording-notice,1,,1,0.001)" in conf)
    # without a prompt lookup: the entry's own language (Read skips a missing file)
    d = load_definition(src)
    assert ("Read(IVR_BARGE,yue/consumer-welcome&yue/lang-offer&yue/recording-notice,"
            in render(d, source_version(src)).files["extensions.conf"])


def test_greeting_whose_following_steps_depend_on_the_hour_is_left_to_the_ivr() -> None:
    d = load_definition(SHIPPED)
    assert static_greeting(d, d.entries["12345"]) == Greeting(("recording-notice",))
    assert static_greeting(d, d.entries["12315"]) == Greeting(
        ("consumer-welcome", "lang-offer", "recording-notice"))
    assert static_greeting(d, d.entries["12333"]) is None  # office hours follow the greeting
    assert static_greeting(d, d.entries["8890"]) is None  # not zero navigation


def test_checked_in_asterisk_conf_is_rendered_from_the_checked_in_dialplans() -> None:
    d = load_definition(SHIPPED)
    lookup = file_prompt_lookup(SHIPPED.parent / "prompts")  # as `ivr dialplan render`
    files = render(d, source_version(SHIPPED), lookup).files
    conf = SHIPPED.parent / "asterisk-conf"
    for name, text in files.items():
        assert (conf / name).read_text(encoding="utf-8") == text, (
            f"asterisk-conf/{name} is stale: run `ivr dialplan render`")
