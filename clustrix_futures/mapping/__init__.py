"""``Executor.map`` over chunks: :mod:`~clustrix_futures.mapping.chunks` (splitting without materialising),
:mod:`~clustrix_futures.mapping.sizing` (every chunk-size rule), :mod:`~clustrix_futures.mapping.run` (the map
iterator) and :mod:`~clustrix_futures.mapping.feeder` (the chunk queue shared with the feeder thread)."""
