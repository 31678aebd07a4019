"""``python -m trialwatch.monitor.cli``: the ``trialwatch`` command without the console script."""

from trialwatch.monitor.cli import main

if __name__ == "__main__":
    main()
