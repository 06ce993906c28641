"""Built-in pipeline stages, registered through the ``visiontk.stages`` entry points."""
