"""Reports: figures, display tables, the output writers and the ``audit`` command."""
