from aiwriter.commands import main

raise SystemExit(main())
