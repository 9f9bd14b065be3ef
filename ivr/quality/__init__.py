"""Quality review of recorded calls (质检): a daily sample per agent and per queue plus
every call with a low satisfaction score, a complaint tag or a three-way with 110;
reviewers score it on the configured form (``quality.scored``), agents see their scores
and appeal (``quality.appealed``).  See docs/supervision.md."""
