"""sigserve inside other engines, each behind an extra (`pip install 'sigserve[ray]'`).

- `ray_data`: batch scoring of a data set (parquet, CSV, JSON, numpy, TFRecords of tf.train.Example)
  with any signature of a SavedModel, on a Ray actor pool; `sigserve score` is its command line.
- `scoring` and `columns`: the engine-neutral part (a table of rows in, the same rows' results out),
  which another engine (Beam, Spark) could call the same way.

Nothing in sigserve imports this package; TensorFlow is still imported only by `sigserve.runtime`,
when a scorer loads its model.
"""
