from aiwriter.cli import main

raise SystemExit(main())
