"""Errors a user reads: every message carries Chinese and English."""


class AIWriterError(Exception):
    """A user-facing error. The CLI prints it without a traceback and exits non-zero."""

    def __init__(self, zh: str, en: str):
        self.zh, self.en = zh, en
        super().__init__(f"{zh} / {en}")
