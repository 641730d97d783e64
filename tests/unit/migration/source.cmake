# Source-side tests of the migration module (sender, policy, process state) and the ram registry.
procmig_test(migration_convergence_policy_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/convergence_policy_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_rate_limiter_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/rate_limiter_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_process_state_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/process_state_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_ram_block_registry_test
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/ram_block_registry_test.cc
             LIBS procmig_ram LABEL unit TIMEOUT 30)
procmig_test(migration_sender_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/sender_test.cc
             LIBS procmig_migration LABEL component TIMEOUT 120)
procmig_test(migration_page_sender_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/page_sender_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_restore_check_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/restore_check_test.cc
             LIBS procmig_migration LABEL unit TIMEOUT 30)
procmig_test(migration_bulk_prescan_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/bulk_prescan_test.cc
             LIBS procmig_migration LABEL component TIMEOUT 60)
