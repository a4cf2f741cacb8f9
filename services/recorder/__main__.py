from services.recorder.app import main

raise SystemExit(main())
