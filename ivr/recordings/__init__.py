"""Recordings (issue 11, recording hooks): the policy (which calls are recorded, how they
are archived), post-processing after the call with pydub and ffmpeg, a durable job per
call in Redis with retries, the archive layout, retention with an audited purge, and the
``recording.ready`` (``stage: archived``) call event.  See docs/recordings.md.

    policy.py   dialplans/recordings.yaml (schema/recordings.v1.json)
    audio.py    one recording → a verified archive (blocking; pydub + ffmpeg)
    store.py    archive layout by date and call; purge with audit lines
    state.py    the durable records (raw recordings of a call, jobs)
    service.py  JobQueue (Redis) and RecordingWorker (the application's component)
    errors.py   RecordingError tree
    cli.py      ivr recordings process|status|purge
"""
