"""The recorder: published channels, and the history of event channels (see services.recorder.app)."""
