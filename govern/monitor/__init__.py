"""Data monitoring: sensitive-data discovery, profiles of data versions, drift, alerts.

- :mod:`.classify` (with :mod:`.detectors`, :mod:`.names`, :mod:`.sample`): what each column
  holds, and the tag and level it should get; :mod:`.catalog_patch` turns accepted suggestions
  into a ``catalog.yaml`` change. Runs on raw files, for stewards (``govern classify``).
- :mod:`.profile`: a data version's profile, computed on a principal's masked view;
  :mod:`.store` keeps profiles under ``state_dir``; :mod:`.drift` compares two of them with
  effect sizes; :mod:`.run` holds the steps a surface calls (profile through the Governor,
  drift of the latest version); :mod:`.prometheus` exports drift alerts to ``/metrics``.

Nothing here stores or prints a raw sampled value: classification keeps counts and shares,
profiles keep statistics of what their principal's plan delivers.
"""
